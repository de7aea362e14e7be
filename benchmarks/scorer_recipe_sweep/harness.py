"""One preference- or reward-model fit, for the recipe sweep (GPU or CPU).

    python harness.py NAME key=value ...      (keys: the dict A below; dir= the folder prepare_data.py wrote)

Prints eval lines and a final ``FINAL {json}`` line: held-out SFT-pair and test-pair excess log-loss over the Bayes
limit (``ex``), expected KL to the exact P (``kl``), direction agreement with P (``dir``).

A standalone mirror of nlhf.models' scorers as of 2026-11-27 (so it runs where only torch + transformers are
installed, e.g. a GPU machine): one row x <sep> y <sep> y' <sep>, each response block blind to the other,
positions restarting after x, W_Q = W_K = I in block 0, features ymean + last (+ ysum = sum / 4), PM head
f = g([h; h']) (antisymmetric logit), RM head r = MLP(h); the same AdamW + warm-up + cosine-to-10% schedule and
gradient clipping as nlhf.training.supervised. Options the package does not have: shift (a previous-token
embedding added at the input) and head=mix (P = sum_k w_k sigma(u_k(y) - u_k(y')), a mixture of K Bradley-Terry
utilities); neither helped (results_h200_20261127.csv).
"""
import os, sys, time, math, pickle, json
import torch
import numpy as np
import torch.nn as nn, torch.nn.functional as F
from transformers import AutoTokenizer, GPT2Config, GPT2Model

A = dict(steps=1200, bs=64, lr=1e-3, warm=100, wd=0.0, layers=2, width=128, heads=4, pool="ymean+last",
         eval_every=400, seed=0, kind="pm", mlp=256, clip=1.0, minlr=0.1, shift=0, qk=1.0, head="mlp", K=4,
         mixx=0, soft=0, data="all", dir=".")
for a in sys.argv[2:]:
    k, v = a.split("=", 1); A[k] = type(A[k])(v) if not isinstance(A[k], str) else v
name = sys.argv[1]
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.set_num_threads(1)
torch.manual_seed(A["seed"])
tok = AutoTokenizer.from_pretrained(os.path.join(A["dir"], "tokenizer"))
SEP, PAD = tok.sep_token_id, tok.pad_token_id
D = pickle.load(open(os.path.join(A["dir"], "data.pkl"), "rb"))


def ids(strs):
    return [list(r) for r in tok(list(strs), add_special_tokens=False)["input_ids"]]


def enc(d):
    return dict(x=ids(d["prompt"]), y=ids(d["y"]), yp=ids(d["y_prime"]),
                z=torch.tensor(np.array(d["label"], dtype=np.float32)),
                p=np.array(d["p"], dtype=float), label=np.array(d["label"], dtype=float))


parts = {"all": ["task", "sft"], "sft": ["sft"]}[A["data"]]
tr = [enc(D[k]) for k in parts]
TR = {k: sum((t[k] for t in tr), []) for k in ("x", "y", "yp")}
TR["z"] = torch.cat([t["z"] for t in tr]); TR["p"] = np.concatenate([t["p"] for t in tr])
if A["soft"]:
    TR["z"] = torch.tensor(TR["p"], dtype=torch.float32)
HE = enc(D["held"]); TE = enc(D["test"])
N = len(TR["x"])

cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=A["width"], n_layer=A["layers"], n_head=A["heads"],
                 resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, activation_function="gelu_pytorch_tanh",
                 pad_token_id=PAD, bos_token_id=2, eos_token_id=3)
cfg._attn_implementation = "sdpa"


class Siam1(nn.Module):
    def __init__(s):
        super().__init__()
        s.enc = GPT2Model(cfg); W = A["width"]
        if A["qk"] > 0:
            with torch.no_grad():
                w = s.enc.h[0].attn.c_attn.weight
                w[:, :W] = torch.eye(W) * A["qk"]; w[:, W:2 * W] = torch.eye(W) * A["qk"]
        if A["shift"]:
            s.prev = nn.Embedding(len(tok), W); nn.init.normal_(s.prev.weight, std=0.02)
        s.dim = W * len(A["pool"].split("+"))
        M = A["mlp"]
        if A["kind"] == "pm" and A["head"] == "mlp":
            s.g = nn.Sequential(nn.Linear(2 * s.dim, M), nn.GELU(), nn.Linear(M, 1))
        elif A["kind"] == "pm" and A["head"] == "mix":
            s.u = nn.Sequential(nn.Linear(s.dim, M), nn.GELU(), nn.Linear(M, A["K"]))
            s.logw = nn.Parameter(torch.zeros(A["K"]))
            if A["mixx"]:
                s.wx = nn.Linear(W, A["K"])
        else:
            s.r = nn.Sequential(nn.Linear(s.dim, M), nn.GELU(), nn.Linear(M, 1))

    def hh(s, x, y, yp):
        B = len(x); rows, P, blocks = [], [], []
        for a, b, c in zip(x, y, yp):
            nx, ny, nyp = len(a) + 1, len(b) + 1, len(c) + 1
            rows.append(a + [SEP] + b + [SEP] + c + [SEP])
            P.append(list(range(nx + ny)) + list(range(nx, nx + nyp)))
            blocks.append((nx, ny, nyp))
        L = max(map(len, rows))
        ids_ = torch.full((B, L), PAD); pos = torch.zeros((B, L), dtype=torch.long)
        blk = torch.full((B, L), -1)
        m1 = torch.zeros((B, L)); m2 = torch.zeros((B, L)); l1 = []; l2 = []
        for k, (r, p, (nx, ny, nyp)) in enumerate(zip(rows, P, blocks)):
            n = len(r); ids_[k, :n] = torch.tensor(r); pos[k, :n] = torch.tensor(p)
            blk[k, :nx] = 0; blk[k, nx:nx + ny] = 1; blk[k, nx + ny:n] = 2
            m1[k, nx:nx + ny] = 1; m2[k, nx + ny:n] = 1; l1.append(nx + ny - 1); l2.append(n - 1)
        ids_, pos, blk, m1, m2 = (t.to(dev) for t in (ids_, pos, blk, m1, m2))
        qb, kb = blk[:, :, None], blk[:, None, :]
        allow = ((kb == 0) | (kb == qb)) & (kb >= 0) & torch.tril(torch.ones(L, L, dtype=torch.bool, device=dev))
        allow |= torch.eye(L, dtype=torch.bool, device=dev)
        e = s.enc.wte(ids_)
        if A["shift"]:
            prev = torch.cat([torch.full_like(ids_[:, :1], PAD), ids_[:, :-1]], 1)
            e = e + s.prev(prev)
        hs = s.enc(inputs_embeds=e, attention_mask=allow[:, None], position_ids=pos, use_cache=False).last_hidden_state
        ar = torch.arange(B, device=dev)
        xm = (blk == 0).float()

        def pool(mk, last):
            out = []
            for p in A["pool"].split("+"):
                if p == "last": out.append(hs[ar, torch.tensor(last, device=dev)])
                elif p == "ymean": out.append((hs * mk[..., None]).sum(1) / mk.sum(1, keepdim=True))
                elif p == "ysum": out.append((hs * mk[..., None]).sum(1) / 4.0)
            return torch.cat(out, -1)
        s._x = (hs * xm[..., None]).sum(1) / xm.sum(1, keepdim=True)
        return pool(m1, l1), pool(m2, l2)

    def logit(s, x, y, yp):
        a, b = s.hh(x, y, yp)
        if A["kind"] == "pm" and A["head"] == "mlp":
            return (s.g(torch.cat([a, b], -1)) - s.g(torch.cat([b, a], -1))).squeeze(-1)
        if A["kind"] == "pm":
            d = s.u(a) - s.u(b)  # [B, K]
            lw = torch.log_softmax(s.logw + (s.wx(s._x) if A["mixx"] else 0), -1)
            return torch.logsumexp(lw + F.logsigmoid(d), -1) - torch.logsumexp(lw + F.logsigmoid(-d), -1)
        return (s.r(a) - s.r(b)).squeeze(-1)


model = Siam1().to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=A["lr"], weight_decay=A["wd"])


def lam(step):
    if step < A["warm"]: return (step + 1) / A["warm"]
    frac = (step - A["warm"]) / max(1, A["steps"] - A["warm"])
    return A["minlr"] + (1 - A["minlr"]) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


sch = torch.optim.lr_scheduler.LambdaLR(opt, lam)


@torch.no_grad()
def metrics(E):
    model.eval(); q = []
    n = len(E["x"])
    for i in range(0, n, 500):
        q.append(torch.sigmoid(model.logit(E["x"][i:i + 500], E["y"][i:i + 500], E["yp"][i:i + 500])).cpu())
    model.train(); q = np.clip(torch.cat(q).numpy().astype(float), 1e-7, 1 - 1e-7)
    z = E["label"]; p = np.clip(E["p"], 1e-7, 1 - 1e-7)
    ll = -np.mean(z * np.log(q) + (1 - z) * np.log(1 - q)); b = -np.mean(z * np.log(p) + (1 - z) * np.log(1 - p))
    kl = np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))
    dec = np.abs(E["p"] - .5) > 1e-9
    return dict(ex=round(float(ll - b), 4), kl=round(float(kl), 4),
                dir=round(float(np.mean((q[dec] > .5) == (E["p"][dec] > .5))), 3))


g = torch.Generator().manual_seed(A["seed"])
t0 = time.time(); run = 0; curve = []
for step in range(A["steps"]):
    idx = torch.randint(N, (A["bs"],), generator=g).tolist()
    lg = model.logit([TR["x"][i] for i in idx], [TR["y"][i] for i in idx], [TR["yp"][i] for i in idx])
    loss = F.binary_cross_entropy_with_logits(lg, TR["z"][idx].to(dev))
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), A["clip"]); opt.step(); sch.step()
    opt.zero_grad(set_to_none=True)
    run += loss.item()
    if (step + 1) % A["eval_every"] == 0 and step + 1 < A["steps"]:
        m = metrics(HE); curve.append((step + 1, round(run / A["eval_every"], 4), m["ex"])); run = 0
        print(name, step + 1, m, f"{time.time() - t0:.0f}s", flush=True)
res = dict(name=name, args=A, held=metrics(HE), test=metrics(TE), curve=curve, wall=round(time.time() - t0, 1))
print("FINAL " + json.dumps(res), flush=True)
