// Ring connections: each member of a ring connected to both of its neighbours.
//
// Guarantees: after connect_ring() returns OK on member r, its Transport has a live
// connection to its right neighbour (r + 1) mod N, which it opened, and to its left
// neighbour (r - 1) mod N, which that neighbour opened. With N = 2 the neighbours are
// the same peer and only rank 0 connects; with N = 1 there is nothing to do. Every
// wait is bounded by the deadline. make_loopback_ring() builds the whole ring in one
// process on 127.0.0.1 (for tests and local runs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {

struct RingMember {
  std::string id;    // node id, as its Transport announces it
  std::string host;  // where it listens
  uint16_t port = 0;
};

// Connects `transport` (members[rank], already listening) into the ring: connects to
// the right neighbour and waits for the left one.
Status connect_ring(Transport& transport, const std::vector<RingMember>& members, size_t rank, Deadline deadline);

// One Transport per id, in ring order, each listening on 127.0.0.1 (a free port) and
// connected to both neighbours. All members join concurrently.
Result<std::vector<std::unique_ptr<Transport>>> make_loopback_ring(const std::vector<std::string>& ids,
                                                                   const std::string& run_id, Deadline deadline);

}  // namespace ravnest::rt
