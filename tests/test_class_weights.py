"""`SppSclConfig.class_weights`: the cross-entropy of the step-1 objective weighs each class as told (brute-force
weighted mean of per-sample negative log-likelihoods), survives a save/reload, and bad weights are refused."""

import pytest
import torch

from conftest import tiny_config
from configuration_sppscl import SppSclConfig
from modeling_sppscl.loss_sppscl import SppSclLoss


def test_weighted_cross_entropy_matches_brute_force():
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 3), torch.tensor([0, 1, 2, 1, 0, 0, 2])
    embeds = torch.nn.functional.normalize(torch.randn(7, 4), dim=-1)
    weights = [1.0, 3.0, 0.5]
    ce = SppSclLoss(tiny_config(class_weights=weights))(logits, embeds, embeds, labels)["ce_loss"]
    nll = -torch.log_softmax(logits, dim=-1)[torch.arange(7), labels]
    per_sample = torch.tensor(weights)[labels]
    assert ce.item() == pytest.approx(float((per_sample * nll).sum() / per_sample.sum()), rel=1e-6)
    plain = SppSclLoss(tiny_config())(logits, embeds, embeds, labels)["ce_loss"]
    assert plain.item() == pytest.approx(float(nll.mean()), rel=1e-6)


def test_class_weights_round_trip(tmp_path):
    tiny_config(class_weights=[1.0, 2.5, 1.0]).save_pretrained(tmp_path)
    assert SppSclConfig.from_pretrained(tmp_path).class_weights == [1.0, 2.5, 1.0]


@pytest.mark.parametrize("weights", [[1.0, 2.0], [1.0, 0.0, 1.0], [1.0, -1.0, 1.0]])
def test_bad_class_weights_are_refused(weights):
    with pytest.raises(ValueError, match="class_weights must hold 3 positive weights"):
        tiny_config(class_weights=weights)
