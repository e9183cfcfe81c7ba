// The Ravnest tensor file (.rvt): weights, checkpoints and test fixtures.
//
// Format (docs/bundle-format.md), little endian: "RVNTENS1", u32 count, then per
// tensor u32 name_len, name, i32 dtype (ONNX code), u32 rank (<= 8), i64 dims,
// u64 nbytes (== numel * dtype size), data.
//
// Guarantees: the writer is atomic — it writes PATH.tmp, fsyncs it, renames it
// over PATH and fsyncs the folder, so PATH holds either the old or the complete
// new file, even after a crash (FileSync::kDurable). With FileSync::kRenameOnly it
// skips both fsyncs and removes an old PATH before the rename (renaming over it
// would make ext4 write the new file back inside rename()): a reader finds the old
// file, no file, or the complete new one, and a crash of the machine may leave PATH
// missing or incomplete (bundles: their manifest's digest of the file then refuses
// it). Small tensors are staged so that the file takes few write() calls; large
// tensors are written from their own storage. The reader checks every
// length against the bytes left in the file before allocating, and its errors name
// the file, the tensor (index and name) and what is wrong.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

inline constexpr char kTensorFileMagic[8] = {'R', 'V', 'N', 'T', 'E', 'N', 'S', '1'};
inline constexpr uint32_t kTensorFileMaxNameBytes = 4096;
inline constexpr uint32_t kTensorFileMaxRank = 8;

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// With sha256_hex, the SHA-256 of the file's bytes (64 lowercase hex characters) is
// stored there on success, computed from the bytes as they are written (equal to
// sha256_file(path) afterwards, without reading the file back).
enum class FileSync { kDurable, kRenameOnly };
Status write_tensor_file(const std::string& path, const NamedTensors& tensors, std::string* sha256_hex = nullptr,
                         FileSync sync = FileSync::kDurable);
// Tensors come back in file order. Errors are kCorrupt (bad content), kUnsupported
// (unknown dtype) or kNotFound (cannot open).
Result<NamedTensors> read_tensor_file(const std::string& path);

}  // namespace ravnest::rt
