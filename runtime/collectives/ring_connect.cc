// Ring connections (see ring_connect.h): connect right, wait for left.
#include "runtime/collectives/ring_connect.h"

#include <thread>

namespace ravnest::rt {

Status connect_ring(Transport& transport, const std::vector<RingMember>& members, size_t rank, Deadline deadline) {
  const size_t n = members.size();
  if (rank >= n) {
    return error(Code::kInvalidArgument, "ring connect: rank ", rank, " is out of range for a ring of ", n, " members");
  }
  if (members[rank].id != transport.node_id()) {
    return error(Code::kInvalidArgument, "ring connect: member ", rank, " is '", members[rank].id,
                 "' but this transport is node '", transport.node_id(), "'");
  }
  if (n == 1) return ok_status();
  const RingMember& right = members[(rank + 1) % n];
  const RingMember& left = members[(rank + n - 1) % n];
  // With two members, rank 1's right neighbour is rank 0, which connects to it.
  if (n > 2 || rank == 0) {
    Status st = transport.connect(right.id, right.host, right.port, deadline);
    if (!st.ok()) return st.with_context("ring member '" + members[rank].id + "' connecting to its right neighbour");
  }
  Status st = transport.wait_for_peer(left.id, deadline);
  if (!st.ok()) return st.with_context("ring member '" + members[rank].id + "' waiting for its left neighbour");
  return ok_status();
}

Result<std::vector<std::unique_ptr<Transport>>> make_loopback_ring(const std::vector<std::string>& ids,
                                                                   const std::string& run_id, Deadline deadline) {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<RingMember> members;
  for (const std::string& id : ids) {
    TransportOptions options;
    options.node_id = id;
    options.run_id = run_id;
    auto transport = std::make_unique<Transport>(std::move(options));
    RN_RETURN_IF_ERROR(transport->listen("127.0.0.1", 0));
    members.push_back(RingMember{id, "127.0.0.1", transport->port()});
    transports.push_back(std::move(transport));
  }
  // Concurrently, as separate machines would: each member's wait needs its left neighbour's connect.
  std::vector<Status> results(ids.size());
  std::vector<std::thread> joiners;
  for (size_t rank = 0; rank < ids.size(); ++rank) {
    joiners.emplace_back([&, rank] { results[rank] = connect_ring(*transports[rank], members, rank, deadline); });
  }
  for (std::thread& t : joiners) t.join();
  for (const Status& st : results) RN_RETURN_IF_ERROR(st);
  return transports;
}

}  // namespace ravnest::rt
