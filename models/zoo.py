"""Shared machinery of the model zoo's export scripts (models/<name>/export.py).

Guarantees:
  * export_training() writes an opset-17 ONNX file exported with training=TrainingMode.TRAINING and
    do_constant_folding=False, graph inputs 'input' (data) and 'labels', outputs 'loss' (mean cross-entropy, the
    graph ends in SoftmaxCrossEntropyLoss) and 'logits', dim 0 of every input and output a dynamic 'batch' axis;
    it fails (SystemExit) unless every trainable parameter is an initializer named by its PyTorch name with the
    parameter's exact value.
  * make_reference() writes a .rvt fixture (models/rvt.py format) holding the fixed batch, the float64 loss, logits
    and gradient of every parameter (model.double()), PyTorch's own float32 gradient error per tensor,
    max|g32 - g64| / max|g64|, as 'fp32_error/<param>' float64 scalars, and for models with BatchNorm the running
    statistics after the step by the ONNX definition ('running/<buffer>'). Nothing is random outside
    torch.manual_seed / explicit generators, so both outputs are reproducible.
  * run_main() is the one command-line front end every export.py uses (--small / --full, --out, --reference,
    --eval-out, --no-loss).

Conventions shared with codegen (codegen/stages.h): data input 'input', labels input 'labels', loss output 'loss'.
Classification labels are int64 [N]; language-model labels are int64 [N, T] with -1 where no loss is taken.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rvt  # noqa: E402

OPSET = 17
IGNORE_INDEX = -1


def loss_of(logits, labels):
    """Mean cross-entropy; logits of rank 3 ([N, T, V], a language model) are flattened to [N*T, V] against labels
    [N*T] (minGPT's form); positions labelled IGNORE_INDEX take no loss."""
    flat = logits.reshape(-1, logits.size(-1)) if logits.dim() == 3 else logits
    return F.cross_entropy(flat, labels.reshape(-1) if labels.dim() > 1 else labels, ignore_index=IGNORE_INDEX)


class LossForward:
    """Within the block, model(input, labels) returns (loss, logits); parameter names stay the model's own."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        model = self.model
        logits_of = model.forward
        model.forward = lambda input, labels: (lambda logits: (loss_of(logits, labels), logits))(logits_of(input))
        return model

    def __exit__(self, *exc):
        del self.model.forward  # back to the class's forward


def param_count(model):
    return sum(p.numel() for p in model.parameters())  # tied parameters count once


def _onnx_export(module, args, path, input_names, output_names, training):
    axes = {name: {0: "batch"} for name in input_names + output_names if name != "loss"}
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    module.train(training)
    kwargs = {"do_constant_folding": not training}  # EVAL: torch.onnx.export's default, constant folding on
    # Gradients stay enabled: under no_grad an EVAL-mode nn.TransformerEncoderLayer takes its fused fast path,
    # which torch 1.13 cannot export.
    torch.onnx.export(module, args, path, opset_version=OPSET, training=mode, input_names=input_names,
                      output_names=output_names, dynamic_axes=axes, **kwargs)


def check_initializers(model, path):
    """Every trainable parameter of `model` must be an initializer of `path` with its PyTorch name and value."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    onnx.checker.check_model(m)
    inits = {t.name: t for t in m.graph.initializer}
    for name, p in model.named_parameters():  # tied parameters appear once, under their first name
        if name not in inits:
            sys.exit(f"{path}: the export lost parameter '{name}'; initializers are {sorted(inits)[:20]}...")
        a = numpy_helper.to_array(inits[name])
        if tuple(a.shape) != tuple(p.shape) or not np.array_equal(a, p.detach().numpy()):
            sys.exit(f"{path}: initializer '{name}' differs from the PyTorch parameter")
    return m


def export_training(model, example, path, with_loss=True):
    """Exports `model` (input -> logits) for training; returns the loaded onnx.ModelProto."""
    x, y = example
    if with_loss:
        with LossForward(model) as m:
            _onnx_export(m, (x, y), path, ["input", "labels"], ["loss", "logits"], training=True)
    else:
        _onnx_export(model, (x,), path, ["input"], ["logits"], training=True)
    return check_initializers(model, path)


def export_eval(model, example, path):
    """Exports like a user who forgot training mode: torch.onnx.export's defaults (EVAL, constant folding)."""
    x, y = example
    with LossForward(model) as m:
        _onnx_export(m, (x, y), path, ["input", "labels"], ["loss", "logits"], training=False)


def _loss_and_grads(module, x, y):
    module.zero_grad()
    loss, logits = module(x, y)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters()}
    return loss.detach(), logits.detach(), grads


def rel_err(a, ref):
    denom = ref.abs().max().item()
    return (a.double() - ref).abs().max().item() / denom if denom > 0 else float("nan")


def _batchnorm_statistics(model, onnx_path):
    """Hooks every BatchNorm of `model`; after a forward, running() gives 'running/<buffer>' -> float64 array: the
    running mean and variance after one training step as the ONNX BatchNormalization definition updates them
    (running = momentum * initializer value in `onnx_path` + (1 - momentum) * batch statistic, with the batch's
    population variance, and momentum = 1 - PyTorch's momentum), not PyTorch's unbiased running variance."""
    import onnx
    from onnx import numpy_helper
    inits = {t.name: t for t in onnx.load(onnx_path).graph.initializer}
    seen, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            def hook(mod, inputs, output, name=name):
                x = inputs[0].detach().double()
                dims = [d for d in range(x.dim()) if d != 1]
                seen[name] = (mod, x.mean(dims), x.var(dims, unbiased=False))
            hooks.append(m.register_forward_hook(hook))

    def running():
        out = {}
        for name, (mod, mean, var) in seen.items():
            momentum = 1.0 - mod.momentum
            for stat, batch in (("running_mean", mean), ("running_var", var)):
                old = numpy_helper.to_array(inits[f"{name}.{stat}"]).astype(np.float64)
                out[f"running/{name}.{stat}"] = momentum * old + (1.0 - momentum) * batch.numpy()
        for h in hooks:
            h.remove()
        return out
    return running


def make_reference(model, example, path, onnx_path):
    """Writes the fixture of `model` (exported to `onnx_path`) on the batch `example`; returns {param: fp32 error}.
    Leaves `model` in float64."""
    x, y = example
    model.train()
    with LossForward(model) as module:
        loss32, logits32, g32 = _loss_and_grads(module, x, y)
        module.double()
        x64 = x.double() if x.is_floating_point() else x
        running = _batchnorm_statistics(model, onnx_path)
        loss64, logits64, g64 = _loss_and_grads(module, x64, y)
        running = running()

    tensors = {"input": x.numpy(), "labels": y.numpy(), "logits": logits64.numpy(),
               "loss": np.float64(loss64.item())}
    errors = {}
    for name, g in g64.items():
        if g.abs().max().item() == 0:
            sys.exit(f"{path}: the gradient of '{name}' is all zero on the fixture batch; change the batch")
        tensors[f"grad/{name}"] = g.numpy()
        errors[name] = rel_err(g32[name], g)
    for name, e in errors.items():
        tensors[f"fp32_error/{name}"] = np.float64(e)
    tensors["fp32_error/loss"] = np.float64(abs(loss32.item() - loss64.item()) / abs(loss64.item()))
    tensors["fp32_error/logits"] = np.float64(rel_err(logits32, logits64))
    tensors.update(running)
    rvt.write(path, tensors)
    back = rvt.read(path)
    for k, v in tensors.items():
        v = np.asarray(v)
        if back[k].dtype != v.dtype or back[k].shape != v.shape or not np.array_equal(back[k], v):
            sys.exit(f"round trip of '{k}' through {path} failed")
    return errors


def op_summary(model_proto):
    """'Op(attr, ...) xN' for every op kind of the graph, sorted."""
    counts = {}
    for n in model_proto.graph.node:
        key = n.op_type + ("(" + ",".join(sorted(a.name for a in n.attribute)) + ")" if n.attribute else "")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


def run_main(name, build, example, doc):
    """Command line of models/<name>/export.py.

    build(small: bool) -> nn.Module (input -> logits), seeded inside; example(small: bool) -> (input, labels)."""
    here = os.path.join(HERE, name)
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="width-reduced variant (default; committed)")
    size.add_argument("--full", action="store_true", help="the full-size model; needs --out")
    ap.add_argument("--out", help=f"ONNX path (default with --small: models/{name}/{name}_small.onnx)")
    ap.add_argument("--reference", help="fixture path (default with --small: models/{name}/reference.rvt); "
                    "'-' to skip")
    ap.add_argument("--eval-out", help="also export in EVAL mode with constant folding (the untrainable form "
                    "that import_model rejects) to this path")
    ap.add_argument("--no-loss", action="store_true", help="export input -> logits only, without labels and loss")
    args = ap.parse_args()
    small = not args.full
    if args.full and not args.out:
        ap.error("--full needs --out PATH (full-size files are not committed)")
    out = args.out or os.path.join(here, f"{name}_small.onnx")
    reference = args.reference if args.reference else (os.path.join(here, "reference.rvt") if small else "-")

    model = build(small)
    batch = example(small)
    m = export_training(model, batch, out, with_loss=not args.no_loss)
    print(f"wrote {out}: {param_count(model):,} parameters, {os.path.getsize(out):,} bytes, "
          f"{len(m.graph.node)} nodes")
    print(f"  ops: {op_summary(m)}")
    if args.eval_out:
        export_eval(build(small), batch, args.eval_out)
        print(f"wrote {args.eval_out} (EVAL mode, constant folding: not trainable)")
    if reference != "-":
        errors = make_reference(build(small), batch, reference, out)
        worst = max(errors, key=errors.get)
        print(f"wrote {reference}: {os.path.getsize(reference):,} bytes; PyTorch fp32 gradient error "
              f"max|g32-g64|/max|g64| worst {errors[worst]:.2e} ({worst}), best {min(errors.values()):.2e}")


# ---------------------------------------------------------------------------------------------------------------
# Model pieces shared by several zoo models.


class CausalSelfAttention(nn.Module):
    """minGPT's attention: one Linear for q, k, v, an explicit causal mask (masked_fill -> Where), softmax."""

    def __init__(self, d, heads, block, dropout):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.heads = heads
        # Not a state_dict entry: it exports as a Constant, not as a (trainable) float initializer.
        self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(1, 1, block, block), persistent=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class NewGELU(nn.Module):
    """The Tanh form of GELU used by GPT-2 and minGPT."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GptBlock(nn.Module):
    def __init__(self, d, heads, block, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, block, dropout)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(d, 4 * d), c_proj=nn.Linear(4 * d, d), act=NewGELU(),
                                      dropout=nn.Dropout(dropout)))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        m = self.mlp
        return x + m.dropout(m.c_proj(m.act(m.c_fc(self.ln_2(x)))))


class Gpt(nn.Module):
    """minGPT's GPT (GPT-2's architecture): token + position embeddings, pre-LN blocks, final LayerNorm, LM head.

    Positions come from an int64 buffer sliced to the sequence length (no Range op); tie=True shares the token
    embedding with the LM head (GPT-2)."""

    def __init__(self, vocab, block, layers, heads, d, dropout, tie):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, d), wpe=nn.Embedding(block, d), drop=nn.Dropout(dropout),
            h=nn.ModuleList([GptBlock(d, heads, block, dropout) for _ in range(layers)]), ln_f=nn.LayerNorm(d)))
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("pos", torch.arange(block, dtype=torch.int64).unsqueeze(0))
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():  # minGPT's scaled init of the residual projections
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))
        if tie:
            self.lm_head.weight = self.transformer.wte.weight

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.weight)

    def forward(self, idx):
        t = idx.size(1)
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(self.pos[:, :t]))
        for block in tr.h:
            x = block(x)
        return self.lm_head(tr.ln_f(x))


def random_tokens(shape, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=g, dtype=torch.int64)
