"""The run's figures: they are written, and the confusion matrix shows the metric's counts."""

import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from modeling_sppscl.reporting import plots
from modeling_sppscl.training.trainer import SppSclTrainer, SppSclTrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from distributed_two_step import RandomFeatures  # noqa: E402

from conftest import collate_feature_rows, tiny_model  # noqa: E402


pytest.importorskip("matplotlib")


def test_confusion_plot_shows_brute_force_counts(tmp_path, monkeypatch):
    labels, predictions = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    shown = {}
    real_pyplot = plots._pyplot

    def recording_pyplot():
        plt = real_pyplot()
        real_subplots = plt.subplots

        def subplots(*args, **kwargs):
            figure, axis = real_subplots(*args, **kwargs)
            real_imshow = axis.imshow
            axis.imshow = lambda matrix, **kw: (shown.setdefault("matrix", np.asarray(matrix)), real_imshow(matrix, **kw))[1]
            return figure, axis

        monkeypatch.setattr(plt, "subplots", subplots)
        return plt

    monkeypatch.setattr(plots, "_pyplot", recording_pyplot)
    plots.plot_confusion_matrix(tmp_path / "confusion.png", labels, predictions, ["a", "b", "c"])
    expected = np.zeros((3, 3), dtype=int)
    for true, predicted in zip(labels, predictions):
        expected[true, predicted] += 1
    np.testing.assert_array_equal(shown["matrix"], expected)
    assert PIL.Image.open(tmp_path / "confusion.png").size[0] > 0


def test_write_plots_after_training_show_the_trained_models_eval_outputs(tmp_path, monkeypatch):
    args = SppSclTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=4, learning_rate=1e-2, report_to=[],
        save_strategy="no", logging_steps=1, use_cpu=True, seed=0,
    )
    dataset = RandomFeatures()
    trainer = SppSclTrainer(model=tiny_model("default"), args=args, train_dataset=dataset, data_collator=collate_feature_rows)
    trainer.train()
    drawn = {}  # what each figure was drawn from
    for name in ("plot_tsne", "plot_confusion_matrix", "plot_training_curves"):
        draw = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda path, *args, _name=name, _draw=draw, **kwargs: (drawn.setdefault(_name, args), _draw(path, *args, **kwargs))[1])
    written = plots.write_plots(tmp_path, trainer, {"validation": dataset})
    assert [path.name for path in written] == ["tsne_validation.png", "confusion_validation.png", "training_curves.png"]
    for path in written:
        assert PIL.Image.open(path).format == "PNG"
    # The trained model in eval mode over the whole split, in its order (the default variant is batch independent).
    with torch.no_grad():
        expected = trainer.model.eval()(**collate_feature_rows([dataset[i] for i in range(len(dataset))]))
    torch.testing.assert_close(torch.from_numpy(drawn["plot_tsne"][0]["fused_embeds"]), expected.fused_embeds, atol=1e-6, rtol=0)
    labels, predictions = drawn["plot_confusion_matrix"][:2]
    assert labels.tolist() == dataset.labels.tolist() and predictions.tolist() == expected.logits.argmax(dim=-1).tolist()
    assert drawn["plot_training_curves"][0] == trainer.state.log_history
