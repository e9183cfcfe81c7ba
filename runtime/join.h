// Joining a running job (`ravnest-rt join`, docs/faults.md): a new node asks any
// node of the run for a place, receives the bundle of the stage it will back up,
// and then runs as that stage's backup (Trainer with a manifest marked `joined`).
//
// Guarantees: fetch_join_bundle asks `via`, then every stage it is sent on to, in
// the run's order of preference, until a stage's worker accepts (in a run of several
// clusters compiled with --joinable: cluster 0's first stage holds the request until
// a whole cluster's worth of newcomers asked, then assigns each a stage of a new
// cluster and sends it to the node of cluster 0 it will copy); it writes the
// bundle the worker sends into options.dir and checks it loads (file digests
// included). Every wait is bounded; a run that takes no joiners, or whose stages
// all have backups, is an error saying so. The node asked answers at the end of its
// current step, so a join never stops training.
#pragma once

#include <cstdint>
#include <string>

#include "common/json.h"
#include "common/status.h"
#include "runtime/bundle.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

// The join protocol's frames: CONTROL frames at step kJoinStep, the message by
// micro-batch. Joiner and node: the request (JSON {id, host, port, stage: -1}: the
// address the joiner's trainer listens at) and the answer (JSON {accept, reason,
// targets} or {accept, stage, files}), then the bundle's files (tensor id = position
// in `files`). Along the pipeline: a worker's offer of its new backup (JSON) and the
// accepts coming back (int64: the first step whose state the sender keeps for a
// replay), tensor id = the backup's stage.
inline constexpr uint64_t kJoinStep = uint64_t{1} << 57;
inline constexpr uint32_t kJoinRequest = 0;
inline constexpr uint32_t kJoinAnswer = 1;
inline constexpr uint32_t kJoinOffer = 2;
inline constexpr uint32_t kJoinAccept = 3;
inline constexpr uint32_t kJoinFile = 4;
// New clusters (several clusters, --joinable): a node of the new cluster, connected to
// its peers, says READY to the node of cluster 0 it copies, which answers with the
// next round's number and which clusters are alive (JSON {round, alive}); the new
// cluster's stages then agree after every round whether all of them are in (START
// down the pipeline, START + 1 back up, tensor id = the round).
inline constexpr uint32_t kJoinReady = 5;
inline constexpr uint32_t kJoinReadyAck = 6;
inline constexpr uint32_t kJoinStart = 7;
// Backups in runs of several clusters: a worker's offer of its new backup to the other members of its
// averaging rings (JSON: the backup's id and address), and their accepts (int64 0), tensor id 0.
inline constexpr uint32_t kJoinRingOffer = 8;
inline constexpr uint32_t kJoinRingAccept = 9;

struct JoinOptions {
  PeerAddress via;       // any node of the run
  PeerAddress self;      // the joiner's node id and the address its trainer will listen at
  std::string dir;       // where the received bundle is written (created)
  double connect_timeout_s = 60;
  double answer_timeout_s = 180;  // a node answers at the end of its current step
};

// The protocol's JSON messages as byte frames and back (`what` names the message in errors).
Tensor json_frame(const Json& json);
Result<Json> frame_json(const Tensor& frame, const std::string& what);
// A node's address in a message: {id, host, port, stage}; read back with its checks.
Json join_peer_json(const PeerAddress& peer, int stage);
Result<PeerAddress> join_peer_of(const Json& json, const std::string& what);

// Returns the bundle folder (options.dir), ready for load_bundle.
Result<std::string> fetch_join_bundle(const JoinOptions& options);

}  // namespace ravnest::rt
