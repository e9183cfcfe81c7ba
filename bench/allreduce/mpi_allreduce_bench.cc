// ravnest-allreduce-mpi: the MPI peer of ravnest-allreduce-bench. Run under
// `mpirun -np N`; which wire it uses is mpirun's choice (the driver passes
// `--mca btl self,tcp --mca btl_tcp_if_include lo` for TCP over loopback, or lets
// Open MPI use shared memory).
//
// Guarantees: MPI_Allreduce(MPI_IN_PLACE, float, MPI_SUM) with Open MPI's own algorithm
// choice; per size: warm-up (first sum checked), MPI_Barrier, timed loop; every rank's
// stamps are gathered to rank 0, which prints the RESULT lines of bench_common.h.
#include <mpi.h>

#include "bench/allreduce/bench_common.h"

namespace ravnest::bench {
namespace {

int main_impl(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  BenchArgs args = parse_args(argc, argv, "mpi");
  args.ranks = size;
  for (size_t mib : args.mib) {
    std::vector<float> data(floats_of_mib(mib));
    fill_input(data, rank);
    const int count = static_cast<int>(data.size());
    auto once = [&] { MPI_Allreduce(MPI_IN_PLACE, data.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); };
    for (int w = 0; w < args.warmup; ++w) {
      once();
      if (w == 0 && !check_first_sum(data, size)) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const std::vector<double> stamps = time_loop(args.iters, once);
    std::vector<double> all(stamps.size() * static_cast<size_t>(size));
    MPI_Gather(stamps.data(), static_cast<int>(stamps.size()), MPI_DOUBLE, all.data(), static_cast<int>(stamps.size()),
               MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      std::vector<std::vector<double>> per_rank;
      for (int r = 0; r < size; ++r) {
        per_rank.emplace_back(all.begin() + r * static_cast<std::ptrdiff_t>(stamps.size()),
                              all.begin() + (r + 1) * static_cast<std::ptrdiff_t>(stamps.size()));
      }
      print_result(args.label, size, data.size() * sizeof(float), args.iters, summarize(per_rank));
    }
  }
  MPI_Finalize();
  return 0;
}

}  // namespace
}  // namespace ravnest::bench

int main(int argc, char** argv) { return ravnest::bench::main_impl(argc, argv); }
