"""Class conditioning: label dropout, the label embedding, classifier-free guidance in every sampler, and the
labels through the sample command."""

import dataclasses

import numpy as np
import pytest
import torch

import softdiff as sd
from softdiff.conditioning import NO_LABEL, drop_labels, guided_denoiser
from softdiff.networks import build_unet
from softdiff.samplers import SAMPLERS
from softdiff.spectra import DataSpectrum


class PerLabelConstant:
    """x̂_0 = m_y whatever x_t and t: the image ``means[y]`` of each sample's label (row 10: ∅), counting calls."""

    def __init__(self, shape=(1, 8, 8), classes=10, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.means = torch.rand(classes + 1, *shape, generator=generator, dtype=torch.float64) * 2 - 1
        self.calls = []

    def __call__(self, x_t, t, labels=None):
        self.calls.append(len(x_t))
        rows = torch.where(labels == NO_LABEL, torch.full_like(labels, len(self.means) - 1), labels)
        return self.means[rows].to(x_t.dtype)


def test_drop_labels_replaces_the_stated_share_with_no_label():
    labels = torch.arange(20_000) % 10
    dropped = drop_labels(labels, 0.1, torch.Generator().manual_seed(3))
    share = (dropped == NO_LABEL).double().mean().item()
    assert abs(share - 0.1) < 4 * (0.1 * 0.9 / 20_000) ** 0.5
    kept = dropped != NO_LABEL
    assert torch.equal(dropped[kept], labels[kept])
    again = drop_labels(labels, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(dropped, again)
    assert torch.equal(drop_labels(labels, 0.0, torch.Generator().manual_seed(3)), labels)


def test_guidance_is_the_ho_salimans_mix_from_one_call_on_a_doubled_batch():
    oracle = PerLabelConstant()
    labels = torch.tensor([3, 0, 9, 3])
    x = torch.zeros(4, 1, 8, 8, dtype=torch.float64)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    for w in (0.0, 1.0, 2.5):
        oracle.calls.clear()
        out = guided_denoiser(oracle, labels, w)(x, t)
        expected = oracle.means[10] + w * (oracle.means[labels] - oracle.means[10])
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        assert oracle.calls == ([4] if w == 1 else [8])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_ends_on_the_guided_prediction(sampler):
    """With x̂_0 = m_y constant, every sampler's last x̂_0 is the guided mix m_∅ + w (m_y − m_∅) exactly."""
    oracle = PerLabelConstant()
    spectrum = DataSpectrum(torch.zeros(1, 8, 8), torch.ones(1, 8, 8), count=1)  # for the ancestral sampler
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(2),
                                      data_spectrum=spectrum)  # fmt: skip
    labels = torch.tensor([1, 7, NO_LABEL, 4])
    for w in (1.0, 3.0):
        x = sd.sample(oracle, process, (4, 1, 8, 8), steps=6, sampler=sampler, seeds=range(4), labels=labels,
                      guidance=w, dtype=torch.float64)  # fmt: skip
        rows = torch.where(labels == NO_LABEL, torch.full_like(labels, 10), labels)
        expected = oracle.means[10] + w * (oracle.means[rows] - oracle.means[10])
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-10)


def test_sample_refuses_bad_labels_and_guidance_without_labels():
    oracle = PerLabelConstant()
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(2))
    for labels, guidance, message in (
        (torch.tensor([1, 2]), 1.0, r"labels must be integers of shape \[4\]"),
        (torch.tensor([1.0, 2, 3, 4]), 1.0, "labels must be integers"),
        (torch.tensor([1, 2, 3, -2]), 1.0, "class indices >= 0"),
        (None, 2.0, "guidance needs labels"),
        (torch.tensor([1, 2, 3, 4]), -1.0, "guidance must be a number >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            sd.sample(oracle, process, (4, 1, 8, 8), steps=2, labels=labels, guidance=guidance)


def test_the_label_embedding_separates_the_classes_and_none_is_no_label():
    torch.manual_seed(0)
    net = build_unet("tiny", resolution=16, image_channels=1, label_classes=10).eval()
    embedding = net.label_embedding
    assert embedding.num_embeddings == 11  # ten classes and ∅
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    c_noise = torch.tensor([0.1, -0.3, 0.7])
    with torch.no_grad():
        weights = torch.Generator().manual_seed(2)
        for parameter in net.parameters():  # the output layer starts at zero: give every weight a value
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=weights))
        a = net(x, c_noise, torch.tensor([0, 0, 0]))
        b = net(x, c_noise, torch.tensor([9, 9, 9]))
        none = net(x, c_noise, torch.tensor([NO_LABEL] * 3))
        assert (a - b).abs().amax() > 1e-3 and (a - none).abs().amax() > 1e-3
        torch.testing.assert_close(net(x, c_noise), none, rtol=0, atol=0)  # labels None: ∅ for every image
        torch.testing.assert_close(net(x[:1], c_noise[:1], torch.tensor([9])), b[:1], rtol=1e-5, atol=1e-5)
        embedding.weight[3] = embedding.weight[10]  # class 3 made identical to ∅: its output is ∅'s
        torch.testing.assert_close(net(x, c_noise, torch.tensor([3, 3, 3])), none, rtol=0, atol=0)
        with pytest.raises(ValueError, match="labels"):
            net(x, c_noise, torch.tensor([0, 10, 1]))
    with pytest.raises(ValueError, match="unconditional network"):
        build_unet("tiny", resolution=16, image_channels=1)(x, c_noise, torch.tensor([0, 1, 2]))


def test_conditional_training_needs_labelled_data(tmp_path):
    from softdiff.training.config import TrainConfig
    from softdiff.training.loop import train

    config = TrainConfig(data="shapes:16", resolution=16, net="tiny", steps=1, batch=4, nfe=2, cond="class")
    with pytest.raises(SystemExit, match="--cond class needs labelled data; shapes:16 has no labels"):
        train(config, tmp_path / "run")


def test_a_conditional_run_samples_the_labels_asked_for_and_saves_them(tmp_path):
    """Train two steps conditional on MNIST's labels, then ``softdiff.sample --labels 0-9 --guidance 2``: the
    .npz holds the labels cycled over the seeds, and the images are those of sd.sample with the same labels."""
    from softdiff.cli.sample import main as sample_main
    from softdiff.loading import load_model
    from softdiff.training.config import TrainConfig
    from softdiff.training.loop import train

    run = tmp_path / "run"
    config = TrainConfig(data="mnist", resolution=16, net="tiny", steps=2, batch=8, nfe=2, sample_count=10,
                         log_every=1, ckpt_every=2, sample_every=2, cond="class")  # fmt: skip
    train(config, run)
    state = torch.load(next((run / "checkpoints").glob("*.pt")), weights_only=False)
    assert state["label_classes"] == 10
    out = tmp_path / "digits.npz"
    argv = ["--ckpt", str(run), "--n", "12", "--steps", "3", "--labels", "0-9", "--guidance", "2", "--out", str(out)]
    assert sample_main([*argv, "--no-progress"]) == 0
    with np.load(out) as saved:
        images, labels = saved["arr_0"], saved["labels"]
    assert images.shape == (12, 16, 16, 1) and labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    denoiser, process, _ = load_model(str(run), weights="ema", device=torch.device("cpu"))
    expected = sd.sample(denoiser, process, (12, 1, 16, 16), steps=3, seeds=range(12),
                         labels=torch.from_numpy(labels), guidance=2.0)  # fmt: skip
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    # without --labels a conditional checkpoint draws every class in turn (and saves the labels it drew)
    assert sample_main(["--ckpt", str(run), "--n", "12", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    with np.load(out) as saved:
        images, labels = saved["arr_0"], saved["labels"]
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    expected = sd.sample(denoiser, process, (12, 1, 16, 16), steps=3, seeds=range(12), labels=torch.from_numpy(labels))
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(SystemExit, match="has classes 0-9"):
        sample_main(["--ckpt", str(run), "--n", "2", "--out", str(tmp_path / "x.npz"), "--labels", "0-10"])
    unconditional = tmp_path / "unconditional"
    train(dataclasses.replace(config, cond="none"), unconditional)
    with pytest.raises(SystemExit, match="--guidance needs a class-conditional checkpoint"):
        sample_main(["--ckpt", str(unconditional), "--n", "2", "--out", str(tmp_path / "x.npz"), "--guidance", "2"])
