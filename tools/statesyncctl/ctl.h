// statesyncctl's commands, one function each, so that main() only dispatches. Each returns the
// process's exit status: 0 done, 1 the node refused or failed, 2 a usage error.
//
// Thread-safety: each command runs on the calling thread (load and demo start their own).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace statesync::ctl {

struct Globals {
  std::filesystem::path socket;  // --socket, else $STATESYNC_SOCKET, else ./control.sock
  bool json = false;             // --json: machine-readable output
};

using Args = std::vector<std::string>;  // what follows the command's name

int ShowStatus(const Globals& g, const Args& args);
int Digest(const Globals& g, const Args& args);
int Sessions(const Globals& g, const Args& args);
int Events(const Globals& g, const Args& args);
int RoleCommand(const Globals& g, const std::string& command, const Args& args);
int Holdoff(const Globals& g, const Args& args);
int Load(const Globals& g, const Args& args);
int Cluster(const Globals& g, const Args& args);
int Demo(const Globals& g, const Args& args);

// The statesyncd next to this executable, else the one on PATH.
std::filesystem::path StatesyncdPath();

}  // namespace statesync::ctl
