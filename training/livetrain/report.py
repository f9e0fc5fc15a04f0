"""training/out/report.md and its PNG figures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import metrics  # noqa: E402


def _sigmoid(z):
    return 1 / (1 + np.exp(-np.clip(np.asarray(z, float), -50, 50)))


def _f(v, digits=3):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


HEADER = "| | n live / attack | AUC | EER | BPCER@APCER5% | BPCER@APCER10% | BPCER@thr | APCER@thr per type |"
RULE = "|---|---|---:|---:|---:|---:|---:|---|"


def _row(label, p, is_live, types, thr):
    ok = ~np.isnan(p)
    s = metrics.summary(p[ok], is_live[ok], types[ok], thr)
    apcer = ", ".join(f"{t} {v:.3f}" for t, v in s["apcer"].items())
    return (f"| {label} | {s['live']} / {s['attacks']} | {_f(s['auc'])} | {_f(s['eer'])} | "
            f"{_f(s['bpcer_at_apcer_5'])} | {_f(s['bpcer_at_apcer_10'])} | {_f(s['bpcer'])} | {apcer} |")


def _per_source(p_base, p_ft, c, thr):
    lines = ["| source | live | attacks | AUC base | AUC ft | BPCER base | BPCER ft | APCER base | APCER ft |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    aucs = {"base": [], "ft": []}
    for s in sorted(set(c.source)):
        sel = c.source == s
        live, att = sel & c.is_live, sel & ~c.is_live
        cells = []
        for key, p in (("base", p_base), ("ft", p_ft)):
            a = metrics.auc(p[live], p[att])
            if a is not None:
                aucs[key].append(a)
            cells.append((a, (p[live] < thr).mean() if live.any() else None,
                          (p[att] >= thr).mean() if att.any() else None))
        lines.append(f"| {s} | {live.sum()} | {att.sum()} | {_f(cells[0][0])} | {_f(cells[1][0])} | "
                     f"{_f(cells[0][1])} | {_f(cells[1][1])} | {_f(cells[0][2])} | {_f(cells[1][2])} |")
    summary = ", ".join(f"{k}: mean AUC {np.mean(v):.3f}, worst {np.min(v):.3f}"
                        for k, v in aucs.items() if v)
    return lines, summary


def _curves(out: Path, name: str, r: dict) -> str:
    cv = r["cv"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for h in cv["folds"]:
        tl = [v for v in h["train_loss"] if v is not None]
        ax[0].plot(range(len(h["train_loss"]) - len(tl), len(h["train_loss"])), tl, alpha=.6,
                   label=f"fold {h['fold']}")
        ax[1].plot(h["val_loss"], alpha=.5, label=f"fold {h['fold']}")
    ax[1].plot(cv["mean_val_loss"], "k-", lw=2, label="mean")
    ax[1].axvline(cv["best_epoch"], color="r", ls="--", label="chosen")
    ax[0].set(title=f"{name}: training loss (weighted BCE)", xlabel="epoch")
    ax[1].set(title="held-out sources: validation loss", xlabel="epoch (0 = base model)")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    png = f"curves_{name}.png"
    fig.savefig(out / png, dpi=90)
    plt.close(fig)
    return png


def _roc(out: Path, title: str, curves: dict, is_live, fname: str) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, p in curves.items():
        ok = ~np.isnan(p)
        _, apcer, bpcer = metrics.sweep(p[ok & is_live], p[ok & ~is_live])
        ax.plot(apcer, 1 - bpcer, label=label)
    ax.set(title=title, xlabel="APCER", ylabel="1 - BPCER", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / fname, dpi=90)
    plt.close(fig)
    return fname


def write(out: Path, cfg, corpus, dev, img_fold, results, counts, licences, repro, timings, log):
    thr = cfg.get("threshold", 0.5)
    L = [f"# Fine-tuning report: {cfg['name']}", ""]
    if cfg.get("smoke"):
        L += ["**SMOKE RUN**: a few images, a few epochs; it checks that the pipeline runs, its "
              "figures mean nothing.", ""]
    L += [f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `{cfg.get('command', 'bash training/train.sh')}`"
          f" (config `{cfg['name']}`, seed {cfg['seed']}). Decision threshold {thr}: accepted as live iff "
          "p_real >= threshold. Figures are over images whose face reached the classifiers "
          "(livecheck's quality gates excluded the others).", "",
          "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), "",
          "## Data", "",
          f"Training images: {len(corpus)} from {len(set(corpus.source))} sources (at most "
          f"{cfg['cap_per_source_class']} per source and label, seed {cfg['seed']}), each with "
          f"{corpus.views} views (view 0 = livecheck's served crop, others = jittered face boxes). "
          f"Devset: {len(dev)} images from {len(set(dev.source))} sources, never trained on.", "",
          "| source | licence | fold | live | attacks | attack types |", "|---|---|---:|---:|---:|---|"]
    fold_of = {s: int(f) for s, f in zip(corpus.source, img_fold)}
    for c in counts:
        types = ", ".join(f"{t} {n}" for t, n in c["types"].items())
        L.append(f"| {c['source']} | {licences.get(c['source'], 'unknown')} | {fold_of[c['source']]} | "
                 f"{c['live']} | {c['attacks']} | {types} |")
    aug = cfg["augment"]
    L += ["", f"Samples per training image: every view clean + {aug.get('photometric_per_view', 1)} "
          f"photometric copies per view; per live image {aug.get('synthetic_per_live', 1)} synthetic "
          "attack(s) (print: gamut, halftone, paper grain, margin; replay: gamma, moiré, glare, bezel; "
          "mask: printed face with eye holes over the real head; all with perspective, fingers, "
          "surroundings). Loss weights: live 1/2, attacks 1/2 shared equally by attack type "
          "(synthetic types included).", "",
          "Frozen backbones reproduce livecheck's logits from its PNG crops: max abs difference " +
          ", ".join(f"{m} {d:.1e}" for m, d in repro.items()) + ".", "",
          "## Members", ""]
    for m, r in results["members"].items():
        cv = r["cv"]
        png = _curves(out, m, r)
        y = corpus.is_live
        L += [f"### {m} → {r['name']}", "",
              f"Head from `{cfg['members'][m]['start']}` trained, backbone frozen; chosen epochs "
              f"{cv['best_epoch']} of {cfg['train']['epochs']} by {cfg['train'].get('select', 'loss')} "
              f"(mean held-out loss {cv['mean_val_loss'][cv['best_epoch']]:.4f}, mean fold AUC "
              f"{cv['mean_val_auc'][cv['best_epoch']]:.4f}; base model {cv['mean_val_loss'][0]:.4f}, "
              f"{cv['mean_val_auc'][0]:.4f}). "
              f"`{r['file']}`: {r['bytes']} bytes, sha256 `{r['sha256']}`, onnxruntime vs PyTorch "
              f"max abs logit difference {r['max_abs_diff']:.1e}.", "", f"![curves]({png})", "",
              "Leave-source-out validation (each fold's sources held out; view 0 crops):", "",
              HEADER, RULE]
        oof_ft, oof_base = _sigmoid(r["oof_ft"]), _sigmoid(r["oof_base"])
        for h in cv["folds"]:
            sel = img_fold == h["fold"]
            L.append(_row(f"fold {h['fold']} base", oof_base[sel], y[sel], corpus.attack_type[sel], thr))
            L.append(_row(f"fold {h['fold']} fine-tuned", oof_ft[sel], y[sel], corpus.attack_type[sel], thr))
        L.append(_row("**pooled base**", oof_base, y, corpus.attack_type, thr))
        L.append(_row("**pooled fine-tuned**", oof_ft, y, corpus.attack_type, thr))
        L += ["", "Devset:", "", HEADER, RULE,
              _row("base", _sigmoid(r["dev_base"]), dev.is_live, dev.attack_type, thr),
              _row("fine-tuned", _sigmoid(r["dev_ft"]), dev.is_live, dev.attack_type, thr), ""]
    L += ["## Model sets", ""]
    weights = _base_weights(cfg, results)
    for name, s in results["sets"].items():
        ms = s["members"]
        base_w = np.array([weights[m] for m in ms])
        mean = lambda key, n: sum(  # noqa: E731
            w * _sigmoid(results["members"][m][key]) for w, m in zip(base_w, ms)) / base_w.sum()
        oof_base, dev_base = mean("oof_base", len(corpus)), mean("dev_base", len(dev))
        f = s["fusion"]
        L += [f"### {name}", "",
              f"Members {', '.join(ms)}; fusion logistic, intercept {f['intercept']:.4f}, coefficients "
              f"{', '.join(f'{v:.4f}' for v in f['coefficients'])} (fitted on out-of-fold member logits). "
              f"Base = the shipped members with their mean rule (weights {', '.join(map(str, base_w))}). "
              "Pooled fine-tuned figures use a fusion fitted without the held-out fold.", "",
              HEADER, RULE]
        for h in results["members"][ms[0]]["cv"]["folds"]:
            sel = img_fold == h["fold"]
            L.append(_row(f"fold {h['fold']} base", oof_base[sel], corpus.is_live[sel], corpus.attack_type[sel], thr))
            L.append(_row(f"fold {h['fold']} fine-tuned", s["oof_p"][sel], corpus.is_live[sel], corpus.attack_type[sel], thr))
        L += [_row("**pooled base**", oof_base, corpus.is_live, corpus.attack_type, thr),
              _row("**pooled fine-tuned**", s["oof_p"], corpus.is_live, corpus.attack_type, thr),
              _row("**devset base**", dev_base, dev.is_live, dev.attack_type, thr),
              _row("**devset fine-tuned**", s["dev_p"], dev.is_live, dev.attack_type, thr), ""]
        roc = _roc(out, f"{name}: devset", {"base": dev_base, "fine-tuned": s["dev_p"]},
                   dev.is_live, f"roc_dev_{name}.png")
        roc2 = _roc(out, f"{name}: held-out sources", {"base": oof_base, "fine-tuned": s["oof_p"]},
                    corpus.is_live, f"roc_lso_{name}.png")
        lines, summ = _per_source(oof_base, s["oof_p"], corpus, thr)
        dlines, dsumm = _per_source(dev_base, s["dev_p"], dev, thr)
        L += [f"![roc]({roc2}) ![roc]({roc})", "",
              f"Per held-out source ({summ}):", "", *lines, "",
              f"Devset per source ({dsumm}):", "", *dlines, ""]
    (out / "report.md").write_text("\n".join(L) + "\n")
    summary = {name: {"lso_ft": metrics.summary(s["oof_p"][~np.isnan(s["oof_p"])],
                                                 corpus.is_live[~np.isnan(s["oof_p"])],
                                                 corpus.attack_type[~np.isnan(s["oof_p"])], thr),
                      "dev_ft": metrics.summary(s["dev_p"], dev.is_live, dev.attack_type, thr)}
               for name, s in results["sets"].items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log("report: " + "; ".join(f"{k}: LSO AUC {_f(v['lso_ft']['auc'])}, devset AUC {_f(v['dev_ft']['auc'])}"
                               for k, v in summary.items()))


def _base_weights(cfg, results) -> dict:
    """Each member's weight in the base set's mean rule (1 when the base set has no weights)."""
    base_set = json.loads((Path(__file__).resolve().parents[2] / cfg["base_set"]).read_text())
    names = [m["name"] for m in base_set["classifiers"]]
    w = base_set.get("fusion", {}).get("weights") or [1.0] * len(names)
    return {n: float(x) for n, x in zip(names, w)}
