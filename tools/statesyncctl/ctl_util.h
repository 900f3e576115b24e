// Small pieces every statesyncctl command uses: option parsing with --help, a progress bar,
// and reading the JSON line a command prints last.
//
// Thread-safety: plain functions.
#pragma once

#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <optional>
#include <string>

#include "ctl.h"

namespace statesync::ctl {

// Parses a command's options into `vm`. Prints the options for --help (returns 0), the error
// for a bad or missing one (returns 2), else returns -1: go on.
int ParseOptions(
    const std::string& command, const boost::program_options::options_description& options,
    const Args& args, boost::program_options::variables_map& vm,
    const boost::program_options::positional_options_description* positional = nullptr);

// "[#######.......]" for 0..1.
std::string ProgressBar(double fraction, int width);

// The last line of `text` that parses as a JSON object.
std::optional<boost::json::object> LastJsonLine(const std::string& text);

}  // namespace statesync::ctl
