"""browser.reader_problems on pages made to trip it: what it must flag (a page wider than a true
390 px phone, a verl config key in the prose, a short time said in hours, a count shown as '1.00',
an image without alt text) and what it must leave alone (a config key in a table or a closed details
section, a clean page). One Chromium for all the pages, as over a build's reports. And what the
README's screenshots show, held against a build (browser.screenshot_differences)."""

from __future__ import annotations

import os

import pytest

HEAD = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body style='margin:0'>"
        "<a rel='prev' href='#'>previous</a> <a rel='next' href='#'>next</a>{body}</body></html>")


@pytest.fixture
def chromium():
    from cbs_rlvr.report.browser import find_chromium

    if find_chromium() is None:
        if os.environ.get("CBS_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (CBS_REQUIRE_CHROMIUM is set) but not found")
        pytest.skip("Chromium not installed (apt-get install chromium)")


@pytest.mark.slow  # a browser
def test_reader_problems_flags_what_a_reader_trips_over_and_nothing_else(tmp_path, chromium):
    from cbs_rlvr.report.browser import reader_problems

    phase = tmp_path / "p1"
    phase.mkdir()
    bad = phase / "02_bad.html"
    bad.write_text(HEAD.format(title="p1 · steps to target · cbs-rlvr", body=(
        "<p>The batch comes from data.train_batch_size; the decision loses 0.0016 h.</p>"
        "<div style='width:450px'>a figure 450 px wide</div><img src='data:,' alt=''>"
        "<table><thead><tr><th>runs</th><th>reason</th></tr></thead>"
        "<tbody><tr><td>1.00</td><td>no trainer.nnodes in the config</td></tr></tbody></table>"
        "<details><summary>Where in a verl config</summary>actor_rollout_ref.actor.ppo_epochs</details>")))
    good = phase / "02_good.html"
    good.write_text(HEAD.format(title="p1 · steps to target · cbs-rlvr", body=(
        "<p>The decision loses 5.8 s; 3 runs.</p><div style='max-width:100%'>fits</div>"
        "<table><thead><tr><th>runs</th></tr></thead><tbody><tr><td>1,024</td></tr></tbody></table>")))
    problems = reader_problems([bad, good])
    assert problems == [
        f"{bad}: 450 px wide in a 390 px window",  # a true phone width: a headless window is never under 500 px
        f"{bad}: config key(s) in the prose: data.train_batch_size, train_batch_size",
        f"{bad}: a short time in hours (say it in minutes or seconds): 0.0016 h",
        f"{bad}: 1 image(s) without alt text saying what they show",
        f"{bad}: counts not shown as integers: runs = '1.00'"], problems


def test_screenshots_are_stale_when_an_answer_or_the_data_moved_not_when_a_band_did():
    from cbs_rlvr.report.browser import screenshot_differences

    shown = {"section": "p1/02_steps_to_target.html", "data": "sha256:a", "b_noise": {"0.7": "439"},
             "answers": {"p1": "p1 at accuracy 0.7: train 64 × 8 (B = 512), 1.0 h [1.0, 1.1]; B_noise 439 [384, 510] samples"}}
    other_bands = dict(shown, answers={"p1": "p1 at accuracy 0.7: train 64 × 8 (B = 512), 1.0 h [0.98, 1.1]; "
                                             "B_noise 439 [367, 499] samples"})
    assert screenshot_differences(shown, other_bands) == []
    moved = dict(shown, answers={"p1": "p1 at accuracy 0.7: train 32 × 8 (B = 256), 52 min [50, 55]; B_noise 439 "
                                       "[367, 499] samples"})
    assert screenshot_differences(shown, moved) == [
        "p1: 'p1 at accuracy 0.7: train 64 × 8 (B = 512), 1.0 h; B_noise 439 samples' shown, "
        "'p1 at accuracy 0.7: train 32 × 8 (B = 256), 52 min; B_noise 439 samples' built"]
    assert screenshot_differences(shown, dict(shown, data="sha256:b")) == ["data: sha256:a shown, sha256:b built"]
    assert screenshot_differences(shown, dict(shown, b_noise={"0.7": "440"})) == [
        "B_noise by target: {'0.7': '439'} shown, {'0.7': '440'} built"]
    assert screenshot_differences(shown, dict(shown, answers={})) == [
        "p1: 'p1 at accuracy 0.7: train 64 × 8 (B = 512), 1.0 h; B_noise 439 samples' shown, '(none)' built"]
