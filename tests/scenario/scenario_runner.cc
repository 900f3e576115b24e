// Runs a scripted failover scenario (tests/scenario/*.txt) on a SimCluster and compares what
// happened with the trace written under each command, in the manner of etcd raft's datadriven
// tests:
//
//   # a comment
//   cluster p1=primary:200:FVX-1 s2=secondary:100:FVX-2 links=ha1 on_failure=switch_off
//   ----
//
//   run 2s
//   ----
//     0.300 p1  OFF -> SECONDARY (epoch 0): started: no primary heard for 300 ms
//
// A command is one line; its expected output follows the "----" line up to a blank line.
//
//   scenario_runner [--rewrite] FILE...
//
// --rewrite writes the actual traces into the files, to be reviewed as a diff. Without it, a
// difference prints both traces and the exit status is 1.
//
// Commands:
//   cluster ID=ROLE[:PRIORITY[:SERIAL]]... links=A,B [on_failure=P] [override=on]
//           [monitors=M,N] [holdoff_max=D] [preempt_delay=D]   a new cluster (nothing running)
//   start [ID...]        boot the nodes (all by default)
//   run D                let D pass (D like 300ms or 2s)
//   crash ID | boot ID   the process dies | starts again from what it persisted
//   command ID restore-role|set-primary|set-secondary|set-off|planned-restart|shutdown
//   cut LINK [A B] | heal LINK [A B]   both directions, between A and B or everywhere
//   cut-oneway LINK A B  only A -> B
//   monitor ID NAME up|down
//   remote ID NAME=OK|FAILED|DISABLED...   remote service monitoring results seen by ID
//   status               every node's role, epoch, readiness, position and primary
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "sim_cluster.h"

namespace statesync::failover::sim {
namespace {

struct Block {
  std::vector<std::string> preamble;  // comments and blank lines before the command
  std::string command;
  std::vector<std::string> expected;
};

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, sep)) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "scenario_runner: %s\n", why.c_str());
  std::exit(2);
}

Millis ParseDuration(const std::string& text) {
  std::size_t used = 0;
  const long long value = std::stoll(text, &used);
  const std::string unit = text.substr(used);
  if (unit == "ms") return Millis{value};
  if (unit == "s") return Millis{value * 1000};
  if (unit == "min") return Millis{value * 60'000};
  Fail("a duration needs a unit (ms, s, min): '" + text + "'");
}

std::vector<Block> Parse(const std::string& path) {
  std::ifstream in(path);
  if (!in) Fail("cannot read " + path);
  std::vector<Block> blocks;
  Block block;
  std::string line;
  enum { kPreamble, kAfterCommand, kExpected } state = kPreamble;
  while (std::getline(in, line)) {
    switch (state) {
      case kPreamble:
        if (line.empty() || line[0] == '#') {
          block.preamble.push_back(line);
        } else {
          block.command = line;
          state = kAfterCommand;
        }
        break;
      case kAfterCommand:
        if (line != "----") Fail(path + ": a command must be followed by ----: " + block.command);
        state = kExpected;
        break;
      case kExpected:
        if (line.empty()) {
          blocks.push_back(std::move(block));
          block = Block{};
          state = kPreamble;
        } else {
          block.expected.push_back(line);
        }
        break;
    }
  }
  if (state == kAfterCommand) Fail(path + ": the last command has no ----");
  if (state == kExpected) blocks.push_back(std::move(block));
  if (!block.preamble.empty() && state == kPreamble) {
    blocks.push_back(Block{block.preamble, "", {}});
  }
  return blocks;
}

class Runner {
 public:
  std::vector<std::string> Execute(const std::string& line) {
    out_.clear();
    std::istringstream in(line);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    const std::string& verb = words.at(0);
    const auto arg = [&](std::size_t i) -> const std::string& {
      if (i >= words.size()) Fail("'" + line + "' needs more arguments");
      return words[i];
    };
    if (verb == "cluster") {
      NewCluster(words);
    } else if (cluster_ == nullptr) {
      Fail("'" + line + "' before any 'cluster'");
    } else if (verb == "start") {
      if (words.size() == 1) {
        for (const NodeId& id : cluster_->ids()) cluster_->Boot(id);
      } else {
        for (std::size_t i = 1; i < words.size(); ++i) cluster_->Boot(words[i]);
      }
    } else if (verb == "run") {
      cluster_->Run(ParseDuration(arg(1)));
    } else if (verb == "crash") {
      cluster_->Crash(arg(1));
    } else if (verb == "boot") {
      cluster_->Boot(arg(1));
    } else if (verb == "command") {
      cluster_->Command(arg(1), ParseCommand(arg(2)));
    } else if (verb == "cut" || verb == "heal") {
      const LinkIndex link = LinkOf(arg(1));
      const bool up = verb == "heal";
      for (const NodeId& a : cluster_->ids()) {
        for (const NodeId& b : cluster_->ids()) {
          if (words.size() >= 4 &&
              !((a == words[2] && b == words[3]) || (a == words[3] && b == words[2]))) {
            continue;
          }
          cluster_->SetLink(link, a, b, up);
        }
      }
    } else if (verb == "cut-oneway") {
      cluster_->SetLink(LinkOf(arg(1)), arg(2), arg(3), false);
    } else if (verb == "monitor") {
      cluster_->SetMonitor(arg(1), arg(2), arg(3) == "up");
    } else if (verb == "remote") {
      std::vector<ServiceCheck> checks;
      for (std::size_t i = 2; i < words.size(); ++i) {
        const auto eq = words[i].find('=');
        const std::string state = words[i].substr(eq + 1);
        checks.push_back(ServiceCheck{words[i].substr(0, eq), state == "OK" ? ServiceState::kOk
                                                              : state == "FAILED"
                                                                  ? ServiceState::kFailed
                                                                  : ServiceState::kDisabled});
      }
      cluster_->Remote(arg(1), checks);
    } else if (verb == "status") {
      for (const NodeView& v : cluster_->Views()) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%-3s %-9s %-9s epoch %-4llu %-5s applied %-12s primary %s",
                      v.id.c_str(), std::string(ConfiguredRoleName(v.configured)).c_str(),
                      v.running ? std::string(RoleName(v.role)).c_str() : "(stopped)",
                      static_cast<unsigned long long>(v.epoch), v.ready ? "ready" : "-",
                      ToString(v.applied).c_str(), v.following.empty() ? "-" : v.following.c_str());
        out_.push_back(buf);
      }
    } else {
      Fail("unknown command '" + verb + "'");
    }
    return out_;
  }

 private:
  void NewCluster(const std::vector<std::string>& words) {
    ClusterConfig config;
    std::vector<std::string> monitors;
    for (std::size_t i = 1; i < words.size(); ++i) {
      const auto eq = words[i].find('=');
      if (eq == std::string::npos) Fail("cluster: expected KEY=VALUE, got '" + words[i] + "'");
      const std::string key = words[i].substr(0, eq);
      const std::string value = words[i].substr(eq + 1);
      if (key == "links") {
        config.links = Split(value, ',');
      } else if (key == "monitors") {
        monitors = Split(value, ',');
      } else if (key == "on_failure") {
        config.on_failure = Check(ParseOnFailure(value));
      } else if (key == "override") {
        config.override_enabled = value == "on";
      } else if (key == "holdoff_max") {
        config.holdoff_max = ParseDuration(value);
      } else if (key == "preempt_delay") {
        config.preempt_delay = ParseDuration(value);
      } else {
        const std::vector<std::string> parts = Split(value, ':');
        Member m;
        m.id = key;
        m.role = Check(ParseConfiguredRole(parts.at(0)));
        if (parts.size() > 1) m.priority = static_cast<std::uint16_t>(std::stoi(parts[1]));
        m.serial = parts.size() > 2 ? parts[2] : key;
        config.members.push_back(m);
      }
    }
    if (config.members.empty()) Fail("cluster: no members");
    config.self = config.members.front().id;
    if (const Status s = config.Validate(); !s.ok()) Fail("cluster: " + s.ToString());
    links_ = config.links;
    SimOptions options;
    options.seed = 1;
    cluster_ = std::make_unique<SimCluster>(config, monitors, options);
    persisted_.clear();
    cluster_->SetObserver(
        [this](Millis now, const NodeId& node, const Action& action) { Trace(now, node, action); });
  }

  template <typename T>
  static T Check(Result<T> r) {
    if (!r.ok()) Fail(r.status().ToString());
    return std::move(r).value();
  }

  LinkIndex LinkOf(const std::string& name) const {
    for (LinkIndex i = 0; i < links_.size(); ++i) {
      if (links_[i] == name) return i;
    }
    Fail("no link '" + name + "'");
  }

  static OperatorCommand ParseCommand(const std::string& name) {
    if (name == "restore-role") return OperatorCommand::kRestoreRole;
    if (name == "set-primary") return OperatorCommand::kSetPrimary;
    if (name == "set-secondary") return OperatorCommand::kSetSecondary;
    if (name == "set-off") return OperatorCommand::kSetOff;
    if (name == "planned-restart") return OperatorCommand::kPlannedRestart;
    if (name == "shutdown") return OperatorCommand::kShutdown;
    Fail("unknown operator command '" + name + "'");
  }

  static std::string ControlName(ControlKind kind) {
    switch (kind) {
      case ControlKind::kHoldOff:
        return "hold-off";
      case ControlKind::kRelease:
        return "release";
      case ControlKind::kFailRequest:
        return "fail-request";
      case ControlKind::kSwitchRequest:
        return "switch-request";
      case ControlKind::kTakeOver:
        return "take-over";
    }
    return "?";
  }

  void Trace(Millis now, const NodeId& node, const Action& action) {
    std::string text;
    if (const auto* send = std::get_if<SendMessage>(&action)) {
      if (const auto* c = std::get_if<Control>(&send->message)) {
        text = "send " + send->to + " " + ControlName(c->kind) + ": " + c->reason;
        if (c->kind == ControlKind::kTakeOver)
          text += " (from " + ToString(c->final_position) + ")";
      } else if (const auto* r = std::get_if<VoteRequest>(&send->message)) {
        text = "send " + send->to + " vote-request for epoch " + std::to_string(r->epoch);
      } else if (const auto* v = std::get_if<Vote>(&send->message)) {
        text = "send " + send->to + " vote for epoch " + std::to_string(v->epoch) +
               (v->granted ? ": granted" : ": refused, " + v->why_not);
      } else {
        return;  // heartbeats: every 100 ms on every link, too many to read
      }
    } else if (const auto* p = std::get_if<PersistState>(&action)) {
      const DurableState& last = persisted_[node];
      if (p->state.epoch == last.epoch && p->state.planned_stop == last.planned_stop) return;
      text = "persist epoch " + std::to_string(p->state.epoch) +
             (p->state.planned_stop ? ", planned stop" : "") +
             (p->sync ? "" : ", not synced");
      persisted_[node] = p->state;
    } else if (const auto* rc = std::get_if<RoleChange>(&action)) {
      text = std::string(RoleName(rc->from)) + " -> " + std::string(RoleName(rc->to)) + " (epoch " +
             std::to_string(rc->epoch) + "): " + rc->reason;
    } else if (const auto* a = std::get_if<Alert>(&action)) {
      text = "alert: " + a->text;
    } else if (const auto* w = std::get_if<AwaitState>(&action)) {
      text = "await state up to " + ToString(w->up_to);
    } else if (const auto* c = std::get_if<ClaimService>(&action)) {
      text = "claim the service (epoch " + std::to_string(c->epoch) + ")";
    } else if (std::holds_alternative<ReleaseService>(action)) {
      text = "release the service";
    } else if (const auto* f = std::get_if<Follow>(&action)) {
      text = "follow " + (f->primary.empty() ? std::string("nobody") : f->primary);
    } else if (const auto* q = std::get_if<Quarantine>(&action)) {
      text = "quarantine the divergent writes of epoch " + std::to_string(q->epoch);
    }
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%8.3f %-3s ", now.count() / 1000.0, node.c_str());
    out_.push_back(stamp + text);
  }

  std::unique_ptr<SimCluster> cluster_;
  std::vector<std::string> links_;
  std::map<NodeId, DurableState> persisted_;
  std::vector<std::string> out_;
};

bool RunFile(const std::string& path, bool rewrite) {
  std::vector<Block> blocks = Parse(path);
  Runner runner;
  bool same = true;
  for (Block& b : blocks) {
    if (b.command.empty()) continue;
    std::vector<std::string> actual = runner.Execute(b.command);
    if (actual != b.expected) {
      if (!rewrite) {
        std::printf("%s: '%s' differs.\n-- expected:\n", path.c_str(), b.command.c_str());
        for (const auto& l : b.expected) std::printf("%s\n", l.c_str());
        std::printf("-- actual:\n");
        for (const auto& l : actual) std::printf("%s\n", l.c_str());
      }
      same = false;
      b.expected = std::move(actual);
    }
  }
  if (rewrite) {
    std::ofstream out(path);
    for (const Block& b : blocks) {
      for (const auto& l : b.preamble) out << l << '\n';
      if (b.command.empty()) continue;
      out << b.command << "\n----\n";
      for (const auto& l : b.expected) out << l << '\n';
      out << '\n';
    }
    std::printf("%s: %s\n", path.c_str(), same ? "unchanged" : "rewritten");
    return true;
  }
  std::printf("%s: %s\n", path.c_str(), same ? "as expected" : "DIFFERS");
  return same;
}

}  // namespace
}  // namespace statesync::failover::sim

int main(int argc, char** argv) {
  bool rewrite = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--rewrite") {
      rewrite = true;
    } else if (arg == "--help" || arg == "-h") {
      std::printf("usage: scenario_runner [--rewrite] FILE...\n");
      return 0;
    } else {
      files.push_back(arg);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: scenario_runner [--rewrite] FILE...\n");
    return 2;
  }
  bool ok = true;
  for (const std::string& f : files) ok &= statesync::failover::sim::RunFile(f, rewrite);
  return ok ? 0 : 1;
}
