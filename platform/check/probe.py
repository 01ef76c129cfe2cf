"""The held-out probes of one trained arm of the foveation check, and its figures.

Per arm (``evaluate_arm``): held-out loss, greedy captions (glyph accuracy, exact match), where
the fine and coarse queries look (attention mass on the glyph box relative to a uniform spread,
"lift"), what a token carries of its own frame (``frame_signal``); the heatmap strip and the
training curves. The verdict lines and the report: ``report.py``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from fovea.platform.check.report import ENT_COARSE, ENT_FINE, series
from fovea.platform.check.task import normalise_caption
from fovea.platform.config import RunConfig
from fovea.platform.train.failure_signatures import ENTROPY_FRAC

# -- evaluation ----------------------------------------------------------------------------------

def load_eval_batches(cfg: RunConfig, n_videos: int) -> list[dict]:
    """The first ``n_videos`` held-out (val) videos, as collated CPU batches (unshuffled)."""
    from fovea.pipelines.loader import build_eval_loader
    from fovea.platform.eval.batches import select_rows, visual_only

    batches, n = [], 0
    for b in build_eval_loader(cfg.data, cfg.data.val_shards, rank=0, world_size=1, max_samples=n_videos):
        b = visual_only(b)
        if b is None:
            continue
        B = b["input_ids"].shape[0]
        if n + B > n_videos:
            import torch

            b = select_rows(b, torch.arange(B) < n_videos - n)
            B = b["input_ids"].shape[0]
        batches.append(b)
        n += B
        if n >= n_videos:
            break
    return batches


def prompt_ids(tokenizer, users: list[str]) -> list[list[int]]:
    from fovea.pipelines.tokenize import SYSTEM_PROMPT

    out = []
    for u in users:
        msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": u}]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def coarse_generate(model, frames, frame_mask, prompts: list[list[int]], max_new_tokens: int, eos: set[int]):
    """Greedy captions from the coarse (q_static) tokens: how an A6 model is meant to be run.

    Sequence per row = [its coarse visual tokens][prompt][generated], as in coarse_only
    training; rows are grouped by (frames, prompt length) so each group is aligned.
    """
    import torch

    from fovea.model.generation import LLMStepper
    from fovea.model.vlm import FrameIndex

    dev = model.device
    fm = frame_mask.to(dev).bool()
    fi = FrameIndex.from_mask(fm)
    B = fm.shape[0]
    cache = model.encoder.encode_patches(frames.to(dev)[fm]) if fi.n else None
    d = model.llm.config.hidden_size
    vis = (model.scatter_visual(model.visual_tokens(model.coarse_tokens(cache, fi)), fi, B)
           if cache is not None else torch.zeros(B, 0, d, device=dev))
    out: list[list[int]] = [[] for _ in range(B)]
    groups: dict[tuple[int, int], list[int]] = {}
    for b in range(B):
        groups.setdefault((int(fi.n_vis[b]), len(prompts[b])), []).append(b)
    for (nv, _), rows in groups.items():
        ids = torch.tensor([prompts[r] for r in rows], dtype=torch.long, device=dev)
        seq = torch.cat([vis[rows, :nv].to(model.embed_tokens(ids).dtype), model.embed_tokens(ids)], dim=1)
        step = LLMStepper(model, use_cache=True)
        h = step(seq)[:, -1]
        done = torch.zeros(len(rows), dtype=torch.bool, device=dev)
        for _ in range(max_new_tokens):
            tok = model.lm_head(h).float().argmax(-1)
            for j, (r, t) in enumerate(zip(rows, tok.tolist())):
                if done[j]:
                    continue
                if t in eos:
                    done[j] = True
                else:
                    out[r].append(t)
            if bool(done.all()):
                break
            h = step(model.embed_tokens(tok).unsqueeze(1))[:, -1]
    return out


def box_coverage(box_norm: list[float], grid: int):
    """[grid, grid] fraction of each patch cell covered by a normalised box (x0, y0, x1, y1)."""
    import torch

    edges = torch.linspace(0, 1, grid + 1)
    ox = (torch.minimum(edges[1:], torch.tensor(box_norm[2])) - torch.maximum(edges[:-1], torch.tensor(box_norm[0]))).clamp(min=0)
    oy = (torch.minimum(edges[1:], torch.tensor(box_norm[3])) - torch.maximum(edges[:-1], torch.tensor(box_norm[1]))).clamp(min=0)
    return (oy[:, None] * ox[None, :]) * grid * grid  # cell area is 1/grid^2


def patch_maps(attn):
    """[B,T,L,H,Np] -> [B,T,g,g]: mean over layers and heads, CLS dropped, renormalised."""
    w = attn.float().mean(dim=(2, 3))[..., 1:]
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    g = int(round(math.sqrt(w.shape[-1])))
    return w.reshape(*w.shape[:-1], g, g)


def glyph_lift(maps, metas: list[dict | None], frame_mask) -> dict:
    """Attention mass on the target box (and on distractor boxes) vs a uniform spread; also
    split by frame: frame 1 (the fine pass's learned ``q_init``) and frames 2..T (queries the
    LLM predicted from the frames before), as ``lift_first`` / ``lift_rest``."""
    tgt, dis, area, first = [], [], [], []
    g = maps.shape[-1]
    for b, m in enumerate(metas):
        if m is None:
            continue
        for t in range(min(maps.shape[1], len(m["glyphs"]))):
            if not bool(frame_mask[b, t]):
                continue
            rec = m["glyphs"][t]
            cov = box_coverage(rec["box_norm"], g)
            tgt.append(float((maps[b, t].cpu() * cov).sum()))
            area.append(float(cov.sum()) / (g * g))
            first.append(t == 0)
            dm = [float((maps[b, t].cpu() * box_coverage(d["box_norm"], g)).sum()) for d in rec.get("distractors", [])]
            if dm:
                dis.append(sum(dm) / len(dm))
    if not tgt:
        return {}
    mt, ma = sum(tgt) / len(tgt), sum(area) / len(area)
    out = {"target_mass": mt, "uniform_mass": ma, "lift": mt / ma if ma > 0 else float("nan")}
    for name, sel in (("lift_first", True), ("lift_rest", False)):
        part = [(x, a) for x, a, f in zip(tgt, area, first) if f == sel]
        if part and sum(a for _, a in part) > 0:
            out[name] = sum(x for x, _ in part) / sum(a for _, a in part)
    if dis:
        out["distractor_mass"] = sum(dis) / len(dis)
        out["distractor_lift"] = out["distractor_mass"] / ma if ma > 0 else float("nan")
    return out


def frame_signal(model, frames, frame_mask) -> dict:
    """How much a frame's token changes when that frame alone is swapped for another video's
    frame in the same slot, relative to the token's norm: mean |z - z_swapped| / mean |z| over
    the frames that have a partner, for the coarse (q_static) and fine (shifted) queries.

    frames [B,T,3,H,W] (padded), frame_mask [B,T]. A query pass that attends to the glyph but
    whose token hardly moves with the frame sees without carrying what it sees.
    """
    import torch

    if frames.dim() != 5 or frames.shape[0] < 2:
        return {}
    mask = frame_mask.bool()
    B, T = mask.shape
    flat = (mask.flatten().long().cumsum(0) - 1).reshape(B, T)  # (b, t) -> index in flat order
    partner = torch.roll(torch.arange(B, device=mask.device), 1)
    z_c, z_f = model.readouts(frames, mask)
    delta = {"coarse": [], "fine": []}
    norm = {"coarse": [], "fine": []}
    for t in range(T):
        ok = mask[:, t] & mask[partner, t]
        if not bool(ok.any()):
            continue
        swapped = frames.clone()
        swapped[:, t] = frames[partner, t]
        s_c, s_f = model.readouts(swapped, mask)
        i = flat[ok, t]
        for name, z, s in (("coarse", z_c, s_c), ("fine", z_f, s_f)):
            delta[name].append((z[i] - s[i]).float().norm(dim=-1))
            norm[name].append(z[i].float().norm(dim=-1))
    if not delta["fine"]:
        return {}
    return {k: float(torch.cat(delta[k]).mean() / torch.cat(norm[k]).mean().clamp_min(1e-12)) for k in delta}


def glyph_accuracy(generated: str, labels: list[str]) -> float:
    words = normalise_caption(generated).split()
    want = [normalise_caption(x) for x in labels]
    return sum(1 for i, w in enumerate(want) if i < len(words) and words[i] == w) / max(1, len(want))


# -- one arm, all probes ---------------------------------------------------------------------------

def evaluate_arm(arm: str, model_dir: Path, batches: list[dict], by_key: dict, device, max_new_tokens: int,
                 heat_n: int) -> dict:
    """Loss, captions, attention on the held-out batches for one trained arm."""
    import torch

    from fovea.platform.eval.batches import autocast
    from fovea.platform.eval.checkpoint import load_model_for_eval

    model, tok = load_model_for_eval(model_dir, device)
    eos = eos_ids(tok)
    mode = "coarse_only" if arm == "a6" else "coarse_fine"
    sums = {"loss": 0.0, "loss_fine": 0.0, "loss_coarse": 0.0, "n_tok": 0.0}
    ar_sums = {"loss": 0.0, "n_tok": 0.0}
    diag_sums: dict[str, float] = {}
    records, lifts, heat = [], {"fine": [], "coarse": []}, []
    t0 = time.time()
    signal: dict[str, float] = {}
    with torch.no_grad():
        for batch in batches:
            b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            metas = [by_key.get(k) for k in b["keys"]]
            add_losses(model, b, mode, device, sums, diag_sums)
            if arm == "baseline":
                add_autoregressive_loss(model, b, device, ar_sums)
            if not signal:  # the first batch: enough to tell 5 % from 100 %
                with autocast(device):
                    signal = frame_signal(model, b["frames"], b["frame_mask"])
            generated = greedy_captions(arm, model, tok, b, device, max_new_tokens, eos)
            records += caption_records(arm, b, metas, generated)
            for which in (("fine", "coarse") if arm == "baseline" else ("coarse",)):
                with autocast(device):
                    attn = model.query_attention(b["frames"], b["frame_mask"], which=which)
                maps = patch_maps(attn)
                lifts[which].append((glyph_lift(maps, metas, b["frame_mask"]), b["frames"].shape[0]))
                keep_heat(heat, which, maps, b, metas, heat_n)
    res: dict[str, Any] = {"arm": arm, "mode": mode, "n_videos": len(records), "eval_seconds": time.time() - t0}
    res.update(mean_losses(sums, arm))
    if ar_sums["n_tok"]:
        res["loss_autoregressive"] = ar_sums["loss"] / ar_sums["n_tok"]
    res.update(caption_scores(records))
    res["diagnostics"] = {k: v / max(1, len(batches)) for k, v in diag_sums.items()}
    res["q_static_std"] = float(model.q_static.detach().float().std())
    res["frame_signal"] = signal
    res.update(mean_lifts(lifts))
    res["records"] = records
    res["heat"] = heat
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def eos_ids(tok) -> set[int]:
    """The chat template's end-of-turn token (the tokenizer's EOS where it has none)."""
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    return {eos if isinstance(eos, int) and eos >= 0 else tok.eos_token_id}


def add_losses(model, b: dict, mode: str, device, sums: dict[str, float], diag_sums: dict[str, float]) -> None:
    """One teacher-forced forward: token-weighted losses into ``sums``, the batch's scalar
    diagnostics (not the per-layer ``_l`` ones) into ``diag_sums``."""
    from fovea.platform.eval.batches import autocast

    with autocast(device):
        out = model(frames=b["frames"], frame_mask=b["frame_mask"], input_ids=b["input_ids"],
                    attention_mask=b["attention_mask"], loss_mask=b["loss_mask"], mode=mode,
                    compute_coarse=True, return_diagnostics=True, return_logits=False)
    nt = float(out["num_targets"])
    sums["n_tok"] += nt
    for k in ("loss", "loss_fine", "loss_coarse"):
        v = float(out[k])
        sums[k] += v * nt if math.isfinite(v) else float("nan")
    for k, v in out.get("diagnostics", {}).items():
        if isinstance(v, (int, float)) and math.isfinite(float(v)) and "_l" not in k:
            diag_sums[k] = diag_sums.get(k, 0.0) + float(v)


def add_autoregressive_loss(model, b: dict, device, sums: dict[str, float]) -> None:
    """The baseline's teacher-forced loss with the queries it makes for itself, frame by frame
    (``mode="autoregressive"``, as ``model.generate`` runs): training reads each frame through the
    coarse pass's queries, captions are generated through these. Where the two losses part, the
    captions can read worse than loss_fine says."""
    from fovea.platform.eval.batches import autocast

    with autocast(device):
        out = model(frames=b["frames"], frame_mask=b["frame_mask"], input_ids=b["input_ids"],
                    attention_mask=b["attention_mask"], loss_mask=b["loss_mask"], mode="autoregressive",
                    compute_coarse=False, return_logits=False)
    nt, v = float(out["num_targets"]), float(out["loss"])
    sums["n_tok"] += nt
    sums["loss"] += v * nt if math.isfinite(v) else float("nan")


def greedy_captions(arm: str, model, tok, b: dict, device, max_new_tokens: int, eos: set[int]) -> list[str]:
    """One caption per video: the baseline's through ``model.generate`` (the deployment loop),
    A6's from its coarse tokens."""
    from fovea.platform.eval.batches import autocast

    ids = prompt_ids(tok, b["users"])
    with autocast(device):
        if arm == "a6":
            new = coarse_generate(model, b["frames"], b["frame_mask"], ids, max_new_tokens, eos)
        else:
            new = model.generate(b["frames"], b["frame_mask"], ids, max_new_tokens=max_new_tokens,
                                 eos_token_id=sorted(eos))
    return [tok.decode(n, skip_special_tokens=True).strip() for n in new]


def caption_records(arm: str, b: dict, metas: list[dict | None], generated: list[str]) -> list[dict]:
    """Each video's caption against its reference (the task metadata's, else the shard's)."""
    records = []
    for i, k in enumerate(b["keys"]):
        m, gen = metas[i], generated[i]
        ref = m["caption"] if m else b["assistants"][i]
        labels = m["labels"] if m else ref.split(", ")
        records.append({"arm": arm, "key": k, "videoid": m["videoid"] if m else "", "reference": ref,
                        "generated": gen,
                        "exact_match": float(normalise_caption(gen) == normalise_caption(ref)),
                        "glyph_accuracy": glyph_accuracy(gen, labels)})
    return records


def keep_heat(heat: list[dict], which: str, maps, b: dict, metas: list[dict | None], heat_n: int) -> None:
    """The first ``heat_n`` videos' attention maps of one query, for the heatmap strip."""
    for i in range(b["frames"].shape[0]):
        if sum(1 for h in heat if h["which"] == which) < heat_n:
            heat.append({"which": which, "key": b["keys"][i], "maps": maps[i].cpu(),
                         "frames": b["frames"][i].cpu(), "mask": b["frame_mask"][i].cpu(),
                         "meta": metas[i]})


def mean_losses(sums: dict[str, float], arm: str) -> dict[str, float]:
    """Token-weighted mean losses, and the baseline's loss_fine / loss_coarse ratio."""
    n_tok = max(sums["n_tok"], 1.0)
    res = {k: sums[k] / n_tok for k in ("loss", "loss_fine", "loss_coarse")}
    res["ratio"] = res["loss_fine"] / res["loss_coarse"] if arm == "baseline" and res["loss_coarse"] else float("nan")
    return res


def caption_scores(records: list[dict]) -> dict[str, float]:
    n = max(1, len(records))
    return {"exact_match": sum(r["exact_match"] for r in records) / n,
            "glyph_accuracy": sum(r["glyph_accuracy"] for r in records) / n}


def mean_lifts(lifts: dict[str, list[tuple[dict, int]]]) -> dict[str, dict[str, float]]:
    """Per query (``attn_fine`` / ``attn_coarse``): the batches' lift figures weighted by videos."""
    res = {}
    for which, parts in lifts.items():
        parts = [(p, n) for p, n in parts if p]
        if parts:
            tot = sum(n for _, n in parts)
            keys = set().union(*[p.keys() for p, _ in parts])
            res[f"attn_{which}"] = {k: sum(p.get(k, 0.0) * n for p, n in parts) / tot for k in keys}
    return res


# -- figures ---------------------------------------------------------------------------------------

def heatmap_strip(evals: dict, path: Path, n_videos: int) -> Path | None:
    """Rows per video: baseline fine, baseline coarse, A6 coarse; columns: frames; target box in
    green (from glyphs.jsonl), distractor boxes dashed white; cell titles: attention mass on the box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = evals.get("baseline", {}).get("heat", [])
    a6 = {h["key"]: h for h in evals.get("a6", {}).get("heat", [])}
    fine = [h for h in base if h["which"] == "fine"][:n_videos]
    coarse = {h["key"]: h for h in base if h["which"] == "coarse"}
    if not fine:
        return None
    rows = []
    for h in fine:
        rows.append(("baseline fine", h))
        if h["key"] in coarse:
            rows.append(("baseline coarse", coarse[h["key"]]))
        if h["key"] in a6:
            rows.append(("A6 coarse", a6[h["key"]]))
    T = max(int(h["mask"].sum()) for _, h in rows)
    fig, axes = plt.subplots(len(rows), T, figsize=(1.75 * T, 1.95 * len(rows)), squeeze=False)
    for r, (title, h) in enumerate(rows):
        real = h["mask"].nonzero().squeeze(1).tolist()
        for c in range(T):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(real):
                ax.axis("off")
                continue
            _draw_frame(ax, h, real[c])
            if c == 0:
                ax.set_ylabel(f"{title}\n{h['key'][-6:]}", fontsize=7)
    fig.suptitle("where the queries look (green: target glyph box from glyphs.jsonl; m = attention mass on it)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def _draw_frame(ax, h: dict, t: int) -> None:
    """Frame t of one heat record: the image, its attention map over it, the target box (green)
    and distractor boxes (dashed white) with the attention mass on the target in the title."""
    import torch
    import torch.nn.functional as F
    from matplotlib.patches import Rectangle

    from fovea.model.blocks import IMAGENET_MEAN, IMAGENET_STD

    size = h["frames"].shape[-1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (h["frames"][t] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    m = h["maps"][t]
    heat = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min() + 1e-12)
    ax.imshow(img)
    ax.imshow(heat.numpy(), cmap="jet", alpha=0.45)
    meta = h["meta"]
    label = ""
    if meta and t < len(meta["glyphs"]):
        rec = meta["glyphs"][t]
        x0, y0, x1, y1 = [v * size for v in rec["box_norm"]]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.6))
        for d in rec.get("distractors", []):
            dx0, dy0, dx1, dy1 = [v * size for v in d["box_norm"]]
            ax.add_patch(Rectangle((dx0, dy0), dx1 - dx0, dy1 - dy0, fill=False, edgecolor="white",
                                   linewidth=0.8, linestyle="--"))
        mass = float((m * box_coverage(rec["box_norm"], m.shape[-1])).sum())
        label = f" {rec['label']} m={mass:.2f}"
    ax.set_title(f"t{t}{label}", fontsize=7)


def curves_png(rows: dict[str, list[dict]], log_n: float, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, keys, style, label in (("baseline", ENT_FINE, "-", "baseline fine"),
                                    ("baseline", ENT_COARSE, "--", "baseline coarse"),
                                    ("a6", ENT_COARSE, ":", "A6 coarse")):
        s = series(rows.get(arm, []), keys)
        if s:
            a1.plot(*zip(*s), style, label=label)
    a1.axhline(log_n, color="k", lw=0.8, label="log N")
    a1.axhline(ENTROPY_FRAC * log_n, color="r", lw=0.8, ls="--", label=f"{ENTROPY_FRAC} log N")
    a1.set_xlabel("step"), a1.set_ylabel("attention entropy (nats)"), a1.legend(fontsize=7)
    for arm, key, style, label in (("baseline", "loss_fine", "-", "baseline loss_fine"),
                                   ("baseline", "loss_coarse", "--", "baseline loss_coarse (no grad)"),
                                   ("a6", "loss", ":", "A6 loss (coarse_only)")):
        s = series(rows.get(arm, []), (key,))
        if s:
            a2.plot(*zip(*s), style, label=label)
    a2.set_xlabel("step"), a2.set_ylabel("training loss"), a2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
