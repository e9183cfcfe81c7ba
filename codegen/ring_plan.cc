#include "codegen/ring_plan.h"

#include <map>
#include <set>

namespace ravnest::cg {

Result<std::vector<rt::RingSpec>> plan_rings(const std::vector<std::pair<std::string, int64_t>>& params,
                                             const std::vector<ClusterLayout>& clusters) {
  // Offset of each parameter in the flat space.
  std::map<std::string, std::pair<int64_t, int64_t>> span;  // name -> [begin, end)
  int64_t total = 0;
  for (const auto& [name, count] : params) {
    span[name] = {total, total + count};
    total += count;
  }
  // Per cluster: the first offset owned by each stage, checked contiguous.
  std::set<int64_t> cuts{0, total};
  std::vector<std::vector<int64_t>> starts(clusters.size());
  for (size_t c = 0; c < clusters.size(); ++c) {
    const ClusterLayout& layout = clusters[c];
    int64_t expect = 0;
    for (size_t s = 0; s < layout.stage_params.size(); ++s) {
      starts[c].push_back(expect);
      for (const std::string& p : layout.stage_params[s]) {
        auto it = span.find(p);
        if (it == span.end()) return error(Code::kInternal, "ring plan: unknown parameter '", p, "'");
        if (it->second.first != expect)
          return error(Code::kUnsupported, "ring plan: cluster ", c, " stage ", s, " holds '", p,
                       "' out of the model's parameter order (is it shared between stages?); averaging across "
                       "clusters needs each stage to own a contiguous run of parameters");
        expect = it->second.second;
      }
      cuts.insert(expect);
    }
    if (expect != total)
      return error(Code::kInternal, "ring plan: cluster ", c, " covers ", expect, " of ", total, " parameter elements");
  }
  std::vector<rt::RingSpec> rings;
  std::vector<int64_t> points(cuts.begin(), cuts.end());
  for (size_t i = 0; i + 1 < points.size(); ++i) {
    const int64_t begin = points[i], end = points[i + 1];
    if (begin == end) continue;
    rt::RingSpec ring;
    ring.tag = static_cast<uint32_t>(rings.size());
    for (size_t c = 0; c < clusters.size(); ++c) {
      // The stage whose range contains `begin`.
      size_t s = 0;
      while (s + 1 < starts[c].size() && starts[c][s + 1] <= begin) ++s;
      ring.members.push_back(clusters[c].node_ids[s]);
    }
    for (const auto& [name, count] : params) {
      const auto [pb, pe] = span.at(name);
      const int64_t lo = std::max(pb, begin), hi = std::min(pe, end);
      if (lo < hi) ring.pieces.push_back({name, lo - pb, hi - lo});
    }
    rings.push_back(std::move(ring));
  }
  return rings;
}

}  // namespace ravnest::cg
