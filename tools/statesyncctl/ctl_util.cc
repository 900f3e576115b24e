#include "ctl_util.h"

#include <algorithm>
#include <iostream>

namespace statesync::ctl {

namespace po = boost::program_options;
namespace json = boost::json;

int ParseOptions(const std::string& command, const po::options_description& options,
                 const Args& args, po::variables_map& vm,
                 const po::positional_options_description* positional) {
  try {
    po::command_line_parser parser(args);
    parser.options(options);
    if (positional != nullptr) parser.positional(*positional);
    po::store(parser.run(), vm);
    // --help before the check of required options: it must work without them.
    if (vm.count("help")) {
      std::cout << options;
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "statesyncctl " << command << ": " << e.what() << " (try " << command
              << " --help)\n";
    return 2;
  }
  return -1;
}

std::string ProgressBar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int full = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(full, '#') + std::string(width - full, '.') + "]";
}

std::optional<json::object> LastJsonLine(const std::string& text) {
  std::optional<json::object> found;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    boost::system::error_code ec;
    json::value v = json::parse(std::string_view(text).substr(start, end - start), ec);
    if (!ec && v.is_object()) found = v.as_object();
    start = end + 1;
  }
  return found;
}

}  // namespace statesync::ctl
