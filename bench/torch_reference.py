#!/usr/bin/env python3
"""The isoflop model contract in PyTorch, written the way a strong PyTorch user would: bf16 autocast,
torch.compile, F.scaled_dot_product_attention(is_causal=True), fused AdamW. It starts from the same
step-0 weights and trains on the same token batches as `isoflop bench`, and prints tokens/s and the
per-step losses as one JSON object on stdout (progress goes to stderr).

Inputs come from `isoflop bench --export-inputs DIR ...`; for one size, DIR/<size>/ holds
  model.safetensors   f32 weights, contract names, matrices [in, out] (y = x @ W)
  train_config.json   the run's TrainConfig (lr, schedule, AdamW, batch, seed)
  batches.u16         steps x batch x (T+1) token ids, u16 little-endian; inputs row[:T], targets row[1:]
  batches.json        the shape of batches.u16

Usage:
  python3 bench/torch_reference.py --inputs DIR/d512l8 --warmup 5 --steps 195 [--micro-batch 32]
  python3 bench/torch_reference.py --inputs DIR/d512l8 --check-inputs     # parse only; needs no torch
  python3 bench/torch_reference.py --inputs DIR/d64l2t64 --device cpu --dtype float32 --no-compile --warmup 0
      # the f32 CPU check against isoflop's CPU backend: bench/validate_torch_reference.sh runs it

The model (src/cpu/model.rs is the oracle): pre-norm blocks without biases,
  h = x + Attn(LN1(x)); x' = h + MLP(LN2(h)); logits = LN_f(x) @ head; LN = LayerNorm without bias, eps 1e-6.
  Attn: q, k, v = LN(x) @ wq|wk|wv; heads of 64; QK-Norm = LayerNorm without bias over each head's 64 dims with
  one scale [64] shared by the heads (separate for q and k); RoPE rotate-half: dims i and i+32 pair,
  theta_i = 10000^(-2i/64), angle = pos * theta_i (f64, rounded once to f32); causal softmax(q k^T / 8) v; @ wo.
  MLP: gelu_tanh(LN(h) @ w1) @ w2. Loss: mean next-token cross-entropy over targets != 0.
AdamW: betas (0.9, 0.95), eps 1e-20, weight decay 0.1 on matrices + embedding only, bias-corrected.
torch's AdamW multiplies the decay by the learning rate (p <- p - lr*wd*p), which is isoflop's default
`coupled` mode; for `independent` mode the group's weight_decay is set to wd / lr_t every step.
Schedule: linear warmup then cosine to final_lr_frac (0.1) of the peak, exactly src/train/schedule.rs.
"""
import argparse
import ctypes
import json
import math
import mmap
import os
import statistics
import struct
import sys
import time

SAFETENSORS_DTYPES = {"F32": 4, "BF16": 2, "F16": 2}


def read_safetensors_header(path):
    """Parse a safetensors header without third-party packages: (tensors, metadata), where tensors maps a
    name to (dtype, shape, byte offset from the start of the file, byte length)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(n))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: unreadable safetensors header ({e})") from None
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        start, end = t["data_offsets"]
        if t["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {t['dtype']}")
        tensors[name] = (t["dtype"], list(t["shape"]), base + start, end - start)
    return tensors, meta


def contract_names(d_model, n_layers, vocab):
    """Names and shapes of every parameter, in isoflop's layout order (src/model/params.rs)."""
    d, f = d_model, 4 * d_model
    out = [("embed", [vocab, d])]
    for i in range(n_layers):
        p = f"blocks.{i}."
        out += [
            (p + "ln1.scale", [d]),
            (p + "attn.wq", [d, d]),
            (p + "attn.wk", [d, d]),
            (p + "attn.wv", [d, d]),
            (p + "attn.wo", [d, d]),
            (p + "attn.q_norm.scale", [64]),
            (p + "attn.k_norm.scale", [64]),
            (p + "ln2.scale", [d]),
            (p + "mlp.w1", [d, f]),
            (p + "mlp.w2", [f, d]),
        ]
    out += [("final_norm.scale", [d]), ("head", [d, vocab])]
    return out


def lr_at(step, peak, warmup, total, final_frac):
    """Learning rate of 0-based update `step`, exactly as src/train/schedule.rs."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay = max(total - warmup, 0)
    if decay <= 1:
        return peak
    progress = min((step - warmup) / (decay - 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (final_frac + (1.0 - final_frac) * cosine)


def load_inputs(d):
    """Read and cross-check the exported files of one size."""
    def path(name):
        p = os.path.join(d, name)
        if not os.path.exists(p):
            raise SystemExit(f"error: {p} is missing; write it with `isoflop bench --export-inputs`")
        return p

    with open(path("train_config.json")) as f:
        cfg = json.load(f)
    with open(path("batches.json")) as f:
        side = json.load(f)
    tensors, meta = read_safetensors_header(path("model.safetensors"))
    model = json.loads(meta["isoflop.model"])
    if model != cfg["model"]:
        raise SystemExit(f"error: {d}: model.safetensors is for {model}, train_config.json for {cfg['model']}")
    m = cfg["model"]
    for name, shape in contract_names(m["d_model"], m["n_layers"], m["vocab_size"]):
        if name not in tensors:
            raise SystemExit(f"error: {d}/model.safetensors: tensor {name} is missing")
        if tensors[name][0] != "F32" or tensors[name][1] != shape:
            raise SystemExit(f"error: {d}/model.safetensors: {name} is {tensors[name][:2]}, expected F32 {shape}")
    if side["row_len"] != m["seq_len"] + 1 or side["dtype"] != "uint16" or side["byteorder"] != "little":
        raise SystemExit(f"error: {d}/batches.json does not match the model: {side}")
    size = os.path.getsize(path("batches.u16"))
    want = side["steps"] * side["rows_per_step"] * side["row_len"] * 2
    if size != want:
        raise SystemExit(f"error: {d}/batches.u16 has {size} bytes, batches.json says {want}")
    return cfg, side, tensors


def make_model(torch, cfg):
    nn, F = torch.nn, torch.nn.functional
    m = cfg["model"]
    D, L, V = m["d_model"], m["n_layers"], m["vocab_size"]
    H, EPS = D // 64, 1e-6

    def rope(x, cos, sin):  # x [B, T, H, 64]; cos, sin [T, 32]
        x1, x2 = x[..., :32], x[..., 32:]
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    def p(*shape):
        return nn.Parameter(torch.empty(*shape))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = p(D), p(D)
            self.wq, self.wk, self.wv, self.wo = p(D, D), p(D, D), p(D, D), p(D, D)
            self.q_norm, self.k_norm = p(64), p(64)
            self.w1, self.w2 = p(D, 4 * D), p(4 * D, D)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            h = F.layer_norm(x, (D,), self.ln1, None, EPS)
            q = (h @ self.wq).view(B, T, H, 64)
            k = (h @ self.wk).view(B, T, H, 64)
            v = (h @ self.wv).view(B, T, H, 64)
            q = rope(F.layer_norm(q, (64,), self.q_norm, None, EPS), cos, sin)
            k = rope(F.layer_norm(k, (64,), self.k_norm, None, EPS), cos, sin)
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            x = x + y.transpose(1, 2).reshape(B, T, D) @ self.wo
            h = F.layer_norm(x, (D,), self.ln2, None, EPS)
            return x + F.gelu(h @ self.w1, approximate="tanh") @ self.w2

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = p(V, D)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.final_norm = p(D)
            self.head = p(D, V)

        def forward(self, inputs, targets, cos, sin):
            """Summed cross-entropy over targets != 0 (pad)."""
            x = F.embedding(inputs, self.embed)
            for b in self.blocks:
                x = b(x, cos, sin)
            logits = F.layer_norm(x, (D,), self.final_norm, None, EPS) @ self.head
            return F.cross_entropy(
                logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=0, reduction="sum"
            )

    return Model()


def torch_name(name):
    """Contract name -> parameter name of the module above."""
    return (
        name.replace(".attn.", ".")
        .replace(".mlp.", ".")
        .replace("q_norm.scale", "q_norm")
        .replace("k_norm.scale", "k_norm")
        .replace("ln1.scale", "ln1")
        .replace("ln2.scale", "ln2")
        .replace("final_norm.scale", "final_norm")
    )


def write_safetensors(torch, path, named, meta):
    """Write (contract name, f32 CPU tensor) pairs as a safetensors file without third-party packages."""
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, t in named:
        c = t.detach().to("cpu", torch.float32).contiguous()
        b = ctypes.string_at(c.data_ptr(), c.numel() * 4)  # little-endian f32, as the CPU holds it
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", required=True, help="DIR/<size> written by isoflop bench --export-inputs")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: the rest of the batches)")
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="sequences per forward/backward (default: largest divisor of the batch that fits)")
    ap.add_argument("--device", default="cuda", help="torch device: cuda, cuda:N or cpu")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                    help="bfloat16: autocast (the speed comparison); float32: no autocast, no TF32, math "
                         "attention (the exactness check against isoflop's f32 CPU backend)")
    ap.add_argument("--no-compile", action="store_true", help="eager mode")
    ap.add_argument("--save-params", metavar="FILE",
                    help="after the last step, write the parameters as safetensors (contract names, f32)")
    ap.add_argument("--check-inputs", action="store_true", help="only parse and check the inputs (no torch)")
    a = ap.parse_args()
    cfg, side, tensors = load_inputs(a.inputs)
    m = cfg["model"]
    T, V, batch = m["seq_len"], m["vocab_size"], cfg["batch_size"]
    if side["rows_per_step"] != batch:
        raise SystemExit(f"error: batches.json has {side['rows_per_step']} rows per step, the config {batch}")
    steps = a.steps if a.steps is not None else side["steps"] - a.warmup
    if steps < 1 or a.warmup < 0 or a.warmup + steps > side["steps"]:
        raise SystemExit(f"error: --warmup {a.warmup} + --steps {steps} must be within the {side['steps']} exported steps")
    if a.check_inputs:
        lrs = [lr_at(s, cfg["lr"], cfg["warmup_steps"], cfg["steps"], cfg["final_lr_frac"]) for s in range(cfg["steps"])]
        print(json.dumps({"ok": True, "model": m, "tensors": len(tensors), "batch_steps": side["steps"],
                          "lr_first": lrs[0], "lr_peak": max(lrs), "lr_last": lrs[-1]}))
        return

    import torch

    dev = torch.device(a.device)
    torch.manual_seed(0)
    exact = a.dtype == "float32"
    torch.backends.cuda.matmul.allow_tf32 = not exact
    torch.backends.cudnn.allow_tf32 = not exact
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def precision():
        """bf16 autocast for speed; plain f32 with the math attention kernel for the exactness check."""
        if exact:
            return sdpa_kernel(SDPBackend.MATH)
        return torch.autocast(dev.type, dtype=torch.bfloat16)

    model = make_model(torch, cfg)
    with open(os.path.join(a.inputs, "model.safetensors"), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, (_, shape, off, length) in tensors.items():
                src = torch.frombuffer(mm, dtype=torch.float32, count=length // 4, offset=off).view(shape)
                params[torch_name(name)].copy_(src)
        del src
        mm.close()
    model.to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]  # matrices and the embedding
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]  # norm scales
    wd = cfg["weight_decay"]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"], fused=dev.type == "cuda",
    )
    fwd = model if a.no_compile else torch.compile(model)
    theta = 10000.0 ** (-torch.arange(32, dtype=torch.float64) * 2 / 64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]
    cos, sin = ang.cos().float().to(dev), ang.sin().float().to(dev)
    raw = torch.from_file(os.path.join(a.inputs, "batches.u16"), dtype=torch.int16,
                          size=side["steps"] * batch * (T + 1))
    all_ids = raw.view(side["steps"], batch, T + 1).to(torch.int32) & 0xFFFF  # u16 read as i16

    def step_once(step, micro):
        ids = all_ids[step].to(dev, non_blocking=True).long()
        inputs, targets = ids[:, :T], ids[:, 1:]
        count = int((all_ids[step][:, 1:] != 0).sum())
        lr = lr_at(step, cfg["lr"], cfg["warmup_steps"], cfg["steps"], cfg["final_lr_frac"])
        for g in opt.param_groups:
            g["lr"] = lr
            if g["weight_decay"] and cfg["decay_mode"] == "independent":
                g["weight_decay"] = wd / lr
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=dev)
        for i in range(0, batch, micro):
            with precision():
                loss = fwd(inputs[i:i + micro], targets[i:i + micro], cos, sin)
            (loss / count).backward()
            total += loss.detach()
        if cfg.get("clip"):
            # torch divides by (norm + 1e-6) where isoflop divides by the norm: a relative 1e-6 difference.
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        elif exact:
            norm = torch.linalg.vector_norm(torch.stack([q.grad.norm() for q in model.parameters() if q.grad is not None]))
        if exact:  # the norm of the mean gradient before clipping, as isoflop's metrics.jsonl reports it
            grad_norms.append(norm.item())
        opt.step()
        return total.item() / count  # waits for the step's work

    def fits(micro):
        """Whether a forward/backward of `micro` sequences fits in memory (no parameter changes)."""
        try:
            ids = all_ids[0][:micro].to(dev).long()
            with precision():
                loss = fwd(ids[:, :T], ids[:, 1:], cos, sin)
            loss.backward()
            ok = True
        except torch.OutOfMemoryError:
            ok = False
        loss = None
        model.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return ok

    if a.micro_batch is not None:
        if a.micro_batch < 1 or batch % a.micro_batch:
            raise SystemExit(f"error: --micro-batch {a.micro_batch} must divide the batch {batch}")
        micro = a.micro_batch
    else:
        micro = next((mb for mb in range(batch, 0, -1) if batch % mb == 0 and fits(mb)), None)
        if micro is None:
            raise SystemExit("error: not even one sequence fits in memory")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    losses, times, grad_norms = [], [], []
    for s in range(a.warmup + steps):
        sync()
        t0 = time.perf_counter()
        losses.append(step_once(s, micro))
        sync()
        dt = time.perf_counter() - t0
        if s >= a.warmup:
            times.append(dt)
        print(f"step {s + 1}/{a.warmup + steps} loss {losses[-1]:.4f} ({dt:.3f} s)", file=sys.stderr)
    med = statistics.median(times)
    out = {
        "framework": "torch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else a.device,
        "inputs": os.path.abspath(a.inputs),
        "model": m,
        "batch_size": batch,
        "micro_batch": micro,
        "compiled": not a.no_compile,
        "dtype": a.dtype,
        "warmup_steps": a.warmup,
        "timed_steps": steps,
        "step_time_s": {"median": med, "min": min(times), "max": max(times), "mean": sum(times) / len(times)},
        "tokens_per_s": batch * T / med,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
        "losses": losses,
    }
    if exact:
        out["grad_norms"] = grad_norms
    if a.save_params:
        params = dict(model.named_parameters())
        named = [(n, params[torch_name(n)]) for n, _ in contract_names(m["d_model"], m["n_layers"], V)]
        write_safetensors(torch, a.save_params, named,
                          {"isoflop.model": json.dumps(m), "isoflop.step": str(a.warmup + steps)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
