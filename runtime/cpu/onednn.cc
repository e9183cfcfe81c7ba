// oneDNN engine, streams, descriptors and layout bridging for the CPU kernels.
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::dims to_dims(const Shape& shape) { return dnnl::memory::dims(shape.begin(), shape.end()); }

dnnl::memory::format_tag plain_tag(size_t rank) {
  using tag = dnnl::memory::format_tag;
  switch (rank) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::abcd;
    case 5: return tag::abcde;
    case 6: return tag::abcdef;
    default: return tag::undef;
  }
}

dnnl::memory::desc plain_desc(const Shape& shape) {
  return dnnl::memory::desc(to_dims(shape), dnnl::memory::data_type::f32, plain_tag(shape.size()));
}

PlainArg::PlainArg(const dnnl::memory::desc& plain, const dnnl::memory::desc& chosen, bool is_output)
    : plain_(plain, engine(), DNNL_MEMORY_NONE) {
  if (plain == chosen) return;
  chosen_ = dnnl::memory(chosen, engine());  // the buffer, allocated once
  reorder_ = is_output ? dnnl::reorder(chosen_, plain_) : dnnl::reorder(plain_, chosen_);
}

dnnl::memory& PlainArg::bind_input(const void* data, dnnl::stream& s) {
  plain_.set_data_handle(const_cast<void*>(data));  // oneDNN only reads inputs
  if (!chosen_) return plain_;
  reorder_.execute(s, plain_, chosen_);
  return chosen_;
}

dnnl::memory& PlainArg::bind_output(void* data) {
  plain_.set_data_handle(data);
  return chosen_ ? chosen_ : plain_;
}

void PlainArg::finish_output(dnnl::stream& s) {
  if (chosen_) reorder_.execute(s, chosen_, plain_);
}

OnednnPrimitiveKernel::OnednnPrimitiveKernel(dnnl::primitive prim, const dnnl::memory::desc& desc,
                                             const std::vector<int>& args, std::string what)
    : prim_(std::move(prim)), what_(std::move(what)) {
  for (int arg : args) mems_.emplace_back(arg, dnnl::memory(desc, engine(), DNNL_MEMORY_NONE));
}

OnednnPrimitiveKernel::OnednnPrimitiveKernel(dnnl::primitive prim,
                                             const std::vector<std::pair<int, dnnl::memory::desc>>& args,
                                             std::string what)
    : prim_(std::move(prim)), what_(std::move(what)) {
  for (const auto& [arg, desc] : args) mems_.emplace_back(arg, dnnl::memory(desc, engine(), DNNL_MEMORY_NONE));
}

Status OnednnPrimitiveKernel::run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) {
  return onednn_guard(what_, [&]() -> Status {
    std::unordered_map<int, dnnl::memory> args;
    for (size_t i = 0; i < mems_.size(); ++i) {
      Tensor* t = i + 1 < mems_.size() ? in[i] : out[0];  // the inputs, then the output
      mems_[i].second.set_data_handle(t->raw());
      args[mems_[i].first] = mems_[i].second;
    }
    dnnl::stream& s = stream();
    prim_.execute(s, args);
    s.wait();
    return ok_status();
  });
}

}  // namespace ravnest::rt::cpu
