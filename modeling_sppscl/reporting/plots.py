"""PNG figures of a run: t-SNE of the embeddings (the paper's Figure 3), the confusion matrix and training curves.

Needs matplotlib (`pip install sppscl[plots]`).
"""

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import send_to_device

from .metrics import confusion_matrix


LOSS_TERMS = ("loss", "ce_loss", "intra_text_loss", "intra_image_loss", "inter_loss")


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("--plot needs matplotlib: pip install 'sppscl[plots]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def collect_embeddings(trainer, dataset) -> dict[str, np.ndarray]:
    """`text_embeds`, `image_embeds`, `fused_embeds`, `logits` and `labels` of a split, in eval mode."""
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    collected = defaultdict(list)
    with torch.inference_mode():
        for batch in trainer.get_eval_dataloader(dataset):
            batch = send_to_device(batch, trainer.args.device)
            labels = batch.pop("labels")
            outputs = model(**batch)
            for name in ("text_embeds", "image_embeds", "fused_embeds", "logits"):
                collected[name].append(outputs[name].float().cpu())
            collected["labels"].append(labels.cpu())
    return {name: torch.cat(parts).numpy() for name, parts in collected.items()}


def plot_tsne(path: Path, embeddings: dict[str, np.ndarray], label_names: list[str], seed: int = 0) -> None:
    from sklearn.manifold import TSNE

    plt = _pyplot()
    panels = [("fused_embeds", "fused"), ("text_embeds", "text (T_p)"), ("image_embeds", "image (I_p)")]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6))
    labels = embeddings["labels"]
    perplexity = float(min(30, max(2, len(labels) // 4)))
    for axis, (key, title) in zip(axes, panels):
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings[key])
        for index, name in enumerate(label_names):
            chosen = labels == index
            axis.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7, label=name)
        axis.set_title(f"t-SNE of {title}")
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].legend(markerscale=3, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_confusion_matrix(path: Path, labels: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> None:
    plt = _pyplot()
    count = len(label_names)
    matrix = np.asarray(confusion_matrix(predictions, labels, label_names))
    figure, axis = plt.subplots(figsize=(1.3 * count + 2, 1.3 * count + 1.5))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=colour)
    axis.set_xticks(range(count), label_names, rotation=30)
    axis.set_yticks(range(count), label_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def curves_by_epoch(log_history: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Per-epoch series of each logged loss term, the gate's step-2 rate and dev weighted F1."""
    series = defaultdict(lambda: ([], []))
    for entry in log_history:
        epoch = entry.get("epoch")
        for key in (*LOSS_TERMS, "gate_step2_rate", "eval_weighted_f1"):
            if key in entry and epoch is not None:
                series[key][0].append(epoch)
                series[key][1].append(entry[key])
    return dict(series)


def plot_training_curves(path: Path, log_history: list[dict]) -> None:
    plt = _pyplot()
    series = curves_by_epoch(log_history)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in LOSS_TERMS:
        if key in series:
            axes[0].plot(*series[key], marker=".", label=key)
    axes[0].set_title("training losses")
    axes[0].legend(fontsize=8)
    for axis, key, title in ((axes[1], "gate_step2_rate", "gate: share of steps taking step 2"), (axes[2], "eval_weighted_f1", "dev weighted F1")):
        if key in series:
            axis.plot(*series[key], marker=".")
        axis.set_title(title)
    for axis in axes:
        axis.set_xlabel("epoch")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_plots(output_dir: Path, trainer, splits: dict, split: str = "validation") -> list[Path]:
    """Write `tsne_<split>.png`, `confusion_<split>.png` and `training_curves.png`; returns their paths."""
    output_dir = Path(output_dir)
    label_names = [trainer.accelerator.unwrap_model(trainer.model).config.id2label[i] for i in range(trainer.model.config.num_labels)]
    written = []
    if split in splits:
        embeddings = collect_embeddings(trainer, splits[split])
        written.append(output_dir / f"tsne_{split}.png")
        plot_tsne(written[-1], embeddings, label_names, seed=trainer.args.seed)
        written.append(output_dir / f"confusion_{split}.png")
        plot_confusion_matrix(written[-1], embeddings["labels"], embeddings["logits"].argmax(axis=1), label_names)
    if trainer.state.log_history:
        written.append(output_dir / "training_curves.png")
        plot_training_curves(written[-1], trainer.state.log_history)
    return written
