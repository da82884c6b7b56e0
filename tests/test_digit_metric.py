"""The digit metric: a classifier trained on MNIST itself scores real digits as digits and noise as noise.

A shortened recipe (3 epochs, about 15 s) trains the classifier here; the shipped recipe (16 epochs, 97.7%
held out) is measured in benchmarks/results/demo_mnist. The checks hold for any classifier that learned digits.
"""

import json

import numpy as np
import pytest
import torch

from softdiff.data.loaders import load_data
from softdiff.metrics import digits
from softdiff.metrics.digits import RECIPE, as_digits, digit_reference, digit_scores, held_out_split

QUICK = {**RECIPE, "epochs": 3, "lr_drop_epoch": 2}


@pytest.fixture(scope="module")
def reference():
    return digit_reference("mnist", recipe=QUICK, progress=lambda line: None)


@pytest.fixture(scope="module")
def held_out():
    data = load_data("mnist")
    held = held_out_split(data.labels)[1]
    return data.images[held], data.labels[held]


def test_the_held_out_part_is_the_last_100_of_each_digit_and_never_trained_on():
    labels = load_data("mnist").labels
    train, held = held_out_split(labels)
    assert len(held) == 1000 and len(train) == 4000 and not set(train.tolist()) & set(held.tolist())
    assert torch.bincount(labels[held]).tolist() == [100] * 10
    for digit in range(10):
        assert torch.equal(held[labels[held] == digit], torch.nonzero(labels == digit).flatten()[-100:])


def test_real_held_out_digits_score_as_digits(reference, held_out):
    images, labels = held_out
    assert reference.held_out_accuracy > 0.9
    scores = digit_scores(images, reference, labels=labels)
    assert scores.label_match == pytest.approx(reference.held_out_accuracy)  # the same images and labels
    assert scores.confident > 0.8 and scores.balance > 0.99 and sum(scores.histogram) == 1000
    assert scores.feature_fd < 1e-6 * (1 + scores.floor)  # the reference itself: its statistics exactly
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))  # the 32×32 of training: cropped back to 28×28
    assert digit_scores(padded, reference).to_dict()["feature_fd"] == pytest.approx(scores.feature_fd, abs=1e-9)
    shuffled = digit_scores(images, reference, labels=(labels + 1) % 10)
    assert shuffled.label_match < 0.1


def test_noise_one_digit_and_blurred_digits_score_worse_than_real_ones(reference, held_out):
    images, labels = held_out
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(reference.train_digits), generator=generator)[:1000]  # the set is sorted by digit
    train_like = digit_scores(reference.train_digits[pick], reference)  # real digits not in the reference
    noise = torch.rand(1000, 1, 28, 28, generator=generator) * 2 - 1
    only_ones = images[labels == 1].repeat(10, 1, 1, 1)
    blurred = torch.nn.functional.avg_pool2d(as_digits(images), 5, stride=1, padding=2, count_include_pad=False)
    scores = {name: digit_scores(x, reference) for name, x in
              (("noise", noise), ("ones", only_ones), ("blurred", blurred))}  # fmt: skip
    assert train_like.feature_fd < 3 * train_like.floor + 1
    assert scores["noise"].confident < train_like.confident and scores["noise"].feature_fd > 10 * train_like.floor
    assert scores["ones"].balance < 0.1 and scores["ones"].feature_fd > 5 * train_like.floor
    assert scores["blurred"].feature_fd > 2 * train_like.floor
    assert "not FID" in scores["noise"].line() and "not FID" in scores["noise"].to_dict()["metric"]


def test_the_classifier_is_cached_by_its_recipe(reference, monkeypatch):
    monkeypatch.setattr(digits, "train_classifier", lambda *a, **k: pytest.fail("retrained a cached classifier"))
    again = digit_reference("mnist", recipe=QUICK, progress=lambda line: None)
    assert again.key == reference.key and again.held_out_accuracy == reference.held_out_accuracy
    other = {**QUICK, "seed": 1}
    with pytest.raises(pytest.fail.Exception, match="retrained"):  # another recipe is another classifier
        digit_reference("mnist", recipe=other, progress=lambda line: None)


def test_bad_inputs_are_named(reference):
    with pytest.raises(ValueError, match="one-channel images"):
        digit_scores(torch.zeros(4, 3, 28, 28), reference)
    with pytest.raises(ValueError, match="at least 2 images"):
        digit_scores(torch.zeros(1, 1, 28, 28), reference)
    with pytest.raises(ValueError, match=r"labels must have shape \[4\]"):
        digit_scores(torch.zeros(4, 1, 28, 28), reference, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="not MNIST"):
        digit_reference("shapes:20", recipe=QUICK)


def test_the_fid_command_scores_digits_with_their_labels(reference, held_out, tmp_path, monkeypatch, capsys):
    """``python -m softdiff.fid digits.npz --metrics digits``: an .npz as softdiff.sample writes it (uint8 NHWC and
    the labels asked for) prints the digit metric and writes it to --json."""
    from softdiff.cli import fid

    monkeypatch.setitem(digits.digit_reference.__kwdefaults__, "recipe", QUICK)  # the classifier cached above
    images, labels = held_out
    path = tmp_path / "digits.npz"
    np.savez(path, arr_0=torch.nn.functional.pad(images, (2, 2, 2, 2)).permute(0, 2, 3, 1).numpy(),
             labels=labels.numpy())  # fmt: skip
    record = tmp_path / "score.json"
    assert fid.main([str(path), "--metrics", "digits", "--json", str(record)]) == 0
    line = capsys.readouterr().out
    assert "digits (digits-cnn-v1" in line and "not FID" in line and "label match" in line
    result = json.loads(record.read_text())["results"][0]
    assert result["count"] == 1000 and result["label_match"] == pytest.approx(reference.held_out_accuracy)
    assert fid.main([str(path), "--metrics", "digits,swd"]) == 2
    assert "runs on its own" in capsys.readouterr().err
    np.savez(path, arr_0=images.permute(0, 2, 3, 1).numpy(), labels=labels[:5].numpy())
    assert fid.main([str(path), "--metrics", "digits"]) == 2
    assert "do not match its 1000 images" in capsys.readouterr().err


def test_the_fid_command_scores_a_checkpoints_draws_as_the_same_draws_saved(reference, tmp_path, monkeypatch,
                                                                             capsys):  # fmt: skip
    """``python -m softdiff.fid --ckpt RUN --metrics digits``: the draws of a one-channel MNIST checkpoint score as
    the same draws written by ``python -m softdiff.sample`` and scored from the file."""
    from softdiff.cli import fid
    from softdiff.cli.sample import main as sample_main
    from softdiff.cli.train import main as train

    monkeypatch.setitem(digits.digit_reference.__kwdefaults__, "recipe", QUICK)  # the classifier cached above
    run = tmp_path / "run"
    train(["--preset", "smoke", "--data", "mnist", "--resolution", "16", "--steps", "2", "--out", str(run)])
    drawn, saved = tmp_path / "drawn.json", tmp_path / "saved.json"
    assert fid.main(["--ckpt", str(run), "--n", "12", "--steps", "3", "--metrics", "digits", "--json", str(drawn)]) == 0
    assert sample_main(["--ckpt", str(run), "--seeds", "0-11", "--steps", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert fid.main([str(tmp_path / "s.npz"), "--metrics", "digits", "--json", str(saved)]) == 0
    a, b = (json.loads(path.read_text())["results"][0] for path in (drawn, saved))
    assert a["count"] == b["count"] == 12 and a["histogram"] == b["histogram"]
    assert a["feature_fd"] == pytest.approx(b["feature_fd"], rel=1e-9)
    capsys.readouterr()
