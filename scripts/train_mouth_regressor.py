"""Train the audio -> mouth-opening model (savatar/core/drive/mouth_regressor.py) on real talking
clips with their own synced sound, offline, and write its weights as an .npz asset.

For every clip with sound in the training folders: the sound at 16 kHz runs through the same
streaming analysis as live (AudioAnalyzer, hop_features: one feature vector per 10 ms hop), and
MediaPipe measures the real speaker's mouth opening on every frame (inner lips over inter-ocular
distance; cached by bench lipsync_real in bench/results/lipsync_real/cache). The target of video
frame i is its mouth opening z-scored over the clip; the model's output at the hop heard
`lead` seconds after the frame (lipsync.MOUTH_LEAD_S: file mode shows the mouth that early) is
fitted to it by least squares (AdamW, early stopping on a random eighth of the clips).

1. Sync: a model trained without the clip's source finds each clip's own sound-to-picture offset
   (within +-SYNC_SEARCH_S; its targets are shifted by it), and clips whose sound matches their
   picture at no shift within +-0.3 s are left out (not their own sound).
2. Leave-one-source-out (sources: the file name's part before the first underscore): the model's
   output against the real mouth, and through LipSync and the default avatar's measured jaw
   response for each of MAPPINGS (lipsync.LEARNED is set by hand from the best).
3. The asset: the average of --seeds networks trained on every kept clip, each stopped early on
   its own random eighth; it records the clips it was trained on and their offsets.
Held-out folders (--eval) are never trained on: each clip's correlation (lag 0 / best within +-1
frame) is printed for the model's output, for LipSync with the rule alone and with the model.

    .venv/bin/python scripts/train_mouth_regressor.py --train DIR [DIR ...] --eval DIR [DIR ...] \\
        [--out savatar/assets/mouth_regressor.npz] [--seeds 5]

Never train on the held-out judging clips (../shared/real/README.md) nor on the clips you report
as held out.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from savatar.core.drive.lipsync import LearnedJaw  # noqa: E402
from savatar.core.drive.mouth_regressor import MouthRegressor  # noqa: E402

SR = 16000
# Architecture (a few thousand weights: see mouth_regressor.py).
HIDDEN1, HIDDEN2, CONTEXT, STRIDE = 12, 16, 13, 2
# A training clip's sound may be out of step with its picture by a few frames (encoding, or the
# source's own error); its targets are shifted by the offset found within this range.
SYNC_SEARCH_S = 0.16
# How the model's z drives the jaw (lipsync.LearnedJaw), scored leave-one-source-out. Only
# settings that keep the synthesized-speech tests (tests/core/drive/test_lipsync.py,
# test_articulation.py) are worth scoring: with this model a sustained espeak /a/ needs centre
# 0.25 or more to open past 0.25 rad, and a share over 0.7 loses /a/ > 2 x /i/ in noise.
MAPPINGS = [LearnedJaw(c, p, s) for c in (0.25, 0.3) for p in (0.5, 0.7) for s in (0.6, 0.7)]


def load_clips(dirs: list[Path], landmarker) -> dict[str, dict]:
    """{clip: {"feat": (T, N_FEATURES) per hop, "t": (T,) hop times (s), "mouth": (F,), "fps",
    "audio": (N,) at SR}}."""
    from fit_lipsync import clip_data  # this script's folder is on sys.path when it runs

    from savatar.core.drive.mouth_regressor import hop_features
    from savatar.core.drive.speech_features import AudioAnalyzer

    out = clip_data(dirs, landmarker)
    for clip in out.values():
        an = AudioAnalyzer(SR)
        frames = an.push(np.concatenate([clip["audio"], np.zeros(an.win, np.float32)]))
        clip.update(feat=np.stack([hop_features(f) for f in frames]), t=np.array([f.time_s for f in frames]),
                    mouth=np.asarray(clip["mouth"], np.float64), fps=float(clip["fps"]))
    return out


def targets(clip: dict, lead: float) -> tuple[np.ndarray, np.ndarray]:
    """(hop index of each scored frame (F',), z-scored mouth opening (F',)): the frames whose
    mouth was measured and whose sound `lead` later is inside the clip."""
    m = clip["mouth"]
    tf = np.arange(len(m)) / clip["fps"] + lead + clip.get("offset", 0.0)
    hop = np.rint(np.interp(tf, clip["t"], np.arange(len(clip["t"])))).astype(int)
    ok = np.isfinite(m) & (tf <= clip["t"][-1])
    z = (m - np.nanmean(m[ok])) / (np.nanstd(m[ok]) + 1e-9)
    return hop[ok], z[ok]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def lag_scores(real: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(correlation at lag 0, best within +-1 frame) of two per-frame series."""
    lags = (correlation(real, pred), correlation(real[1:], pred[:-1]), correlation(real[:-1], pred[1:]))
    return lags[0], max(np.nan_to_num(v, nan=-2.0) for v in lags)


def frame_prediction(clip: dict, hop_pred: np.ndarray, lead: float) -> np.ndarray:
    """(F,) the hop predictions read at each video frame's time + lead."""
    tf = np.arange(len(clip["mouth"])) / clip["fps"] + lead
    return np.interp(tf, clip["t"], hop_pred)


def feature_norm(clips: dict[str, dict], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, spread) (N_FEATURES,) of the hop features over the named clips."""
    feats = np.concatenate([clips[n]["feat"] for n in names])
    return feats.mean(0).astype(np.float32), (feats.std(0) + 1e-3).astype(np.float32)


def train(clips: dict[str, dict], names: list[str], lead: float, seed: int = 0, epochs: int = 400,
          weight_decay: float = 1e-3, val_names: list[str] | None = None, verbose: bool = False,
          norm: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One network's weights (MouthRegressor's arrays without the leading M) fitted on the named
    clips, stopped early on val_names; norm: the features' (mean, spread), default the clips'."""
    import torch

    from savatar.core.drive.mouth_regressor import N_FEATURES

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    mean, scale = norm if norm is not None else feature_norm(clips, names)
    span = (CONTEXT - 1) * STRIDE + 1

    def batch(ns):
        xs, idx, ys = [], [], []
        for n in ns:
            f = (clips[n]["feat"] - mean) / scale
            hop, z = targets(clips[n], lead)
            xs.append(torch.tensor(f.T[None], dtype=torch.float32))
            idx.append(torch.tensor(hop))
            ys.append(torch.tensor(z, dtype=torch.float32))
        return xs, idx, ys

    conv1 = torch.nn.Conv1d(N_FEATURES, HIDDEN1, 1)
    conv2 = torch.nn.Conv1d(HIDDEN1, HIDDEN2, CONTEXT, dilation=STRIDE)
    conv3 = torch.nn.Conv1d(HIDDEN2, 1, 1)
    params = [*conv1.parameters(), *conv2.parameters(), *conv3.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=weight_decay)

    def forward(x):
        h = torch.tanh(conv1(x))
        h = torch.cat([h[:, :, :1].expand(-1, -1, span - 1), h], dim=2)  # as MouthRegressor: the first hop lasted
        return conv3(torch.tanh(conv2(h)))[0, 0]

    xs, idx, ys = batch(names)
    vx, vi, vy = batch(val_names or [])
    best, best_loss, stale = None, np.inf, 0
    for epoch in range(epochs):
        opt.zero_grad()
        loss = sum(((forward(x)[i] - y) ** 2).sum() for x, i, y in zip(xs, idx, ys)) / sum(len(y) for y in ys)
        loss.backward()
        opt.step()
        if vx:
            with torch.no_grad():
                vl = float(sum(((forward(x)[i] - y) ** 2).sum() for x, i, y in zip(vx, vi, vy)) / sum(len(y) for y in vy))
            if vl < best_loss - 1e-4:
                best_loss, stale = vl, 0
                best = [p.detach().clone() for p in params]
            else:
                stale += 1
                if stale > 60:
                    break
        if verbose and epoch % 50 == 0:
            print(f"  epoch {epoch} train {float(loss):.3f}" + (f" val {vl:.3f}" if vx else ""))
    if best is not None:
        with torch.no_grad():
            for p, b in zip(params, best):
                p.copy_(b)
    w = [p.detach().numpy().astype(np.float32) for p in params]
    # conv2's weight (HIDDEN2, HIDDEN1, CONTEXT) -> (HIDDEN2, CONTEXT * HIDDEN1), taps oldest first.
    return {"mean": mean, "scale": scale, "w1": w[0][:, :, 0], "b1": w[1],
            "w2": np.ascontiguousarray(w[2].transpose(0, 2, 1).reshape(HIDDEN2, -1)), "b2": w[3],
            "w3": w[4][0, :, 0], "b3": np.float32(w[5][0]), "context": np.int64(CONTEXT), "stride": np.int64(STRIDE)}


def stack(nets: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The average of networks trained with the same feature normalisation, as one asset."""
    out = {k: np.stack([w[k] for w in nets]) for k in ("w1", "b1", "w2", "b2", "w3", "b3")}
    return {**out, **{k: nets[0][k] for k in ("mean", "scale", "context", "stride")}}


def evaluate(weights: dict, clips: dict[str, dict], names: list[str], lead: float) -> dict[str, tuple[float, float]]:
    model = MouthRegressor(weights)
    out = {}
    for n in names:
        pred = frame_prediction(clips[n], model.run(clips[n]["feat"]), lead)
        out[n] = lag_scores(clips[n]["mouth"], pred)
    return out


def seconds(clip: dict) -> float:
    return len(clip["mouth"]) / clip["fps"]


def group(name: str) -> str:
    return name.split("_")[0]


def cross_validate(clips: dict[str, dict], names: list[str], lead: float, norm, seeds: int = 1) -> dict[str, MouthRegressor]:
    """{group: model trained on every other group's clips (seeds networks averaged)}."""
    rng = np.random.default_rng(0)
    models = {}
    for g in sorted({group(n) for n in names}):
        rest = [n for n in names if group(n) != g]
        nets = []
        for seed in range(seeds):
            va = list(rng.choice(rest, size=max(1, len(rest) // 8), replace=False))
            nets.append(train(clips, [n for n in rest if n not in va], lead, seed=seed, val_names=va, norm=norm))
        models[g] = MouthRegressor(stack(nets))
    return models


def align(clips: dict[str, dict], names: list[str], models: dict, lead: float) -> list[str]:
    """Each training clip's sound-to-picture offset, from a model that never saw its source:
    the shift within +-SYNC_SEARCH_S that correlates best, kept when the peak is clear (over
    0.25). Returns the clips whose sound matches their picture at no shift within +-0.3 s
    (correlation under 0.15 everywhere: not the clip's own sound, or badly out of step)."""
    out_of_sync = []
    for n in names:
        c = clips[n]
        pred = models[group(n)].run(c["feat"])
        shifts = np.arange(-0.3, 0.301, 0.02)
        r = np.array([correlation(c["mouth"], frame_prediction(c, pred, lead + d)) for d in shifts])
        near = np.abs(shifts) <= SYNC_SEARCH_S + 1e-9
        if np.nanmax(r) < 0.15:
            out_of_sync.append(n)
        c["offset"] = float(shifts[near][np.nanargmax(r[near])]) if np.nanmax(r[near]) > 0.25 else 0.0
    return out_of_sync


def lipsync_scores(clip: dict, model, learned) -> tuple[float, float]:
    """(lag 0, best within +-1 frame) correlation of the real mouth with the default avatar's
    as LipSync drives it (jaw through the avatar's measured response, read MOUTH_LEAD_S ahead)."""
    from savatar.core.drive import lipsync

    ls = lipsync.LipSync([], SR, mouth_model=model, learned=learned)
    frames = ls.push(np.concatenate([clip["audio"], np.zeros(400, np.float32)]))
    t = np.array([f.time_s for f in frames])
    seen = np.interp([f.jaw for f in frames], *lipsync.LEARNED_OPENING)
    tf = np.arange(len(clip["mouth"])) / clip["fps"] + lipsync.MOUTH_LEAD_S
    return lag_scores(clip["mouth"], np.interp(tf, t, seen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="folders of training clips (.mp4 with sound)")
    parser.add_argument("--eval", type=Path, nargs="*", default=[], help="folders of held-out clips (never trained on)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the weights (.npz)")
    parser.add_argument("--seeds", type=int, default=5, help="networks averaged in the model")
    args = parser.parse_args()
    from savatar.core.drive import lipsync
    from savatar.core.drive.face_landmarks import FaceLandmarker

    t0 = time.time()
    with FaceLandmarker(static_images=True) as landmarker:
        train_clips = load_clips(args.train, landmarker)
        eval_clips = load_clips(args.eval, landmarker)
    clash = set(train_clips) & set(eval_clips)
    if clash:
        raise SystemExit(f"clips both trained on and held out: {sorted(clash)}")
    clips = {**train_clips, **eval_clips}
    names = sorted(train_clips)
    lead = lipsync.MOUTH_LEAD_S
    print(f"{len(names)} training clips, {sum(seconds(clips[n]) for n in names):.0f} s; {len(eval_clips)} held out "
          f"({time.time() - t0:.0f} s to load)", flush=True)

    norm = feature_norm(clips, names)
    dropped = align(clips, names, cross_validate(clips, names, lead, norm), lead)
    names = [n for n in names if n not in dropped]
    norm = feature_norm(clips, names)
    print(f"out of sync, left out: {dropped or 'none'}; offsets (ms): "
          + ", ".join(f"{n} {clips[n]['offset'] * 1e3:+.0f}" for n in names if clips[n]["offset"]), flush=True)
    folds = cross_validate(clips, names, lead, norm, seeds=min(args.seeds, 3))
    print("\nleave-one-source-out, model's output against the real mouth (lag 0 / best within +-1 frame):")
    rows = {n: lag_scores(clips[n]["mouth"], frame_prediction(clips[n], folds[group(n)].run(clips[n]["feat"]), lead))
            for n in names}
    for g in sorted({group(n) for n in names}):
        sel = [rows[n] for n in names if group(n) == g]
        print(f"  {g:8s} {len(sel):3d} clips {np.mean([a for a, _ in sel]):.2f}/{np.mean([b for _, b in sel]):.2f}")
    print(f"  all      {len(rows):3d} clips {np.mean([a for a, _ in rows.values()]):.2f}/{np.mean([b for _, b in rows.values()]):.2f}")

    # How the model drives the jaw: chosen on the same leave-one-source-out models.
    print("\nleave-one-source-out through LipSync and the avatar's jaw response (mean lag 0 / +-1):", flush=True)
    sc = [lipsync_scores(clips[n], None, lipsync.LEARNED) for n in names]
    print(f"  the formant rule alone: {np.mean([a for a, _ in sc]):.3f}/{np.mean([b for _, b in sc]):.3f}", flush=True)
    best, best_score = None, -np.inf
    for learned in MAPPINGS:
        sc = [lipsync_scores(clips[n], folds[group(n)], learned) for n in names]
        score = float(np.mean([a for a, _ in sc]))
        print(f"  {learned}: {score:.3f}/{np.mean([b for _, b in sc]):.3f}", flush=True)
        if score > best_score:
            best, best_score = learned, score
    print(f"  best: {best} (lipsync.LEARNED is {lipsync.LEARNED})")

    rng = np.random.default_rng(1)
    nets = []
    for seed in range(args.seeds):
        va = list(rng.choice(names, size=max(1, len(names) // 8), replace=False))
        nets.append(train(clips, [n for n in names if n not in va], lead, seed=seed, val_names=va, norm=norm))
    weights = stack(nets)
    if eval_clips:
        model = MouthRegressor(weights)
        print("\nheld out (lag 0 / best within +-1 frame), model's output; LipSync with the rule alone; LipSync with the model:")
        for n in sorted(eval_clips):
            a = lag_scores(clips[n]["mouth"], frame_prediction(clips[n], model.run(clips[n]["feat"]), lead))
            r = lipsync_scores(clips[n], None, lipsync.LEARNED)
            m = lipsync_scores(clips[n], model, best)
            print(f"  {n:24s} {a[0]:.2f}/{a[1]:.2f}   {r[0]:.2f}/{r[1]:.2f}   {m[0]:.2f}/{m[1]:.2f}")
    if args.out is not None:
        n_params = sum(weights[k].size for k in ("w1", "b1", "w2", "b2", "w3", "b3"))
        np.savez(args.out, **weights, lead_s=np.float32(lead), trained_on=np.array(names),
                 train_seconds=np.float32(sum(seconds(clips[n]) for n in names)),
                 offsets_s=np.array([clips[n]["offset"] for n in names], np.float32))
        print(f"wrote {args.out} ({n_params} weights, {args.seeds} networks)")


if __name__ == "__main__":
    main()
