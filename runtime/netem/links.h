// The links file (docs/links.md) and the relays that emulate it between the
// pipeline neighbours of a local run (ravnest-launch --links).
//
// Guarantees: parse_links accepts only the documented keys and ranges and its
// errors name the file's field ("nodes.node1.up_mbit") and what to give instead;
// every node of the run resolves to a complete NodeLink (its own fields, else the
// "default" ones). A pipeline link a -> b carries rate min(up_a, down_b) forward,
// min(up_b, down_a) backward, one-way delay delay_a + delay_b both ways, and loss
// 1 - (1 - loss_a)(1 - loss_b) both ways, and the changes of both a's and b's access
// links (an outage of either takes the link down).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "runtime/netem/link_relay.h"

namespace ravnest::rt {

// One node's access link, as in the file.
struct NodeLink {
  double up_mbit = 0;
  double down_mbit = 0;
  double delay_ms = 0;  // one way, from the node to the internet core
  double loss = 0;
  std::vector<LinkChange> changes;  // scheduled outages and rate changes of this access link
};

// Resolves every node of `node_ids`; a node the file names that is not in the run is an error.
// `source` prefixes errors (the file's path).
Result<std::map<std::string, NodeLink>> parse_links(const Json& json, const std::vector<std::string>& node_ids,
                                                    const std::string& source);
Result<std::map<std::string, NodeLink>> read_links_file(const std::string& path,
                                                        const std::vector<std::string>& node_ids);

// {forward a -> b, backward b -> a} of the pipeline link from a to b.
std::pair<LinkDirection, LinkDirection> pipeline_link(const NodeLink& a, const NodeLink& b);

// A node of a local run, as the launcher started it.
struct LaunchedNode {
  std::string id;
  int stage = 0;
  int port = 0;  // where it listens on 127.0.0.1
  int cluster = 0;
};

// One relay per link: pipeline links (stage s -> s + 1 of a cluster) and every
// ordered pair of nodes in different clusters (averaging rings),
// living as long as this object.
class PipelineLinks {
 public:
  // An empty `links_path` starts no relay (every peer_address is direct).
  static Result<std::unique_ptr<PipelineLinks>> start(const std::string& links_path,
                                                      const std::vector<LaunchedNode>& nodes, uint64_t seed = 1);
  // The address `from` should dial to reach `to`: the relay's for a pipeline
  // link, else `to`'s own 127.0.0.1:port.
  std::string peer_address(const std::string& from, const std::string& to) const;
  // One line per link: "link node0 -> node1 via 127.0.0.1:4321: forward 100 Mbit/s, 40 ms, loss 0%; backward ...".
  std::vector<std::string> describe() const;
  // One line per link with the bytes it carried.
  std::vector<std::string> summary() const;

 private:
  struct Link {
    std::string from, to;
    std::pair<LinkDirection, LinkDirection> dirs;
    std::vector<LinkChange> changes;
    std::unique_ptr<LinkRelay> relay;
  };
  std::vector<LaunchedNode> nodes_;
  std::vector<Link> links_;
};

}  // namespace ravnest::rt
