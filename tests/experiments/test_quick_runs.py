"""Quick (reduced-budget) reproductions say "quick" in the report and the plot title and are not judged against
the paper; no verdict reads "at batch none"."""

from __future__ import annotations

import pytest

from ssgd.experiments import table2, table6
from ssgd.experiments.table2 import Table2Config, paper_m, results_markdown, summarize_table2
from ssgd.experiments.table6 import Table6Config, summarize_table6


def _cell(batch, method, acc):
    return dict(batch=batch, method=method, m=paper_m(batch) if method == "ssgd" else 1, test_acc_mean=acc,
                test_acc_std=None, lr=0.1, steps=7, lr_at_grid_edge=False, seeds=1, test_accs=[acc])


# SSGD(m) behind NSGD everywhere and never ahead of SGD: every "ahead" list is empty
CELLS = [_cell(b, m, a) for b in (16, 1024) for m, a in (("sgd", 0.80), ("ssgd", 0.70), ("nsgd", 0.80))]


def test_no_verdict_reads_at_batch_none():
    text = summarize_table2(CELLS, epochs=20)
    assert "none" not in text
    assert "SSGD(m) ahead at no batch size, behind at batch 16, 1024" in text
    assert "we have it ahead at no batch size" in text


def test_quick_runs_are_marked_and_not_judged_against_the_paper():
    full, quick = summarize_table2(CELLS, epochs=20), summarize_table2(CELLS, epochs=1, quick=True)
    assert "large-batch claim" in full and "The paper has SSGD ahead" in full
    assert "large-batch claim" not in quick and "The paper has" not in quick and "quick run" in quick
    assert "trailed at batch 16, 1024" in quick  # our own comparisons stay
    md_full = results_markdown({"epochs": 20, "cells": CELLS})
    md_quick = results_markdown({"epochs": 1, "quick": True, "cells": CELLS})
    assert "SGD trailed" in md_full
    assert "SGD trailed" not in md_quick and "not judged (quick run)" in md_quick and "**Quick run**" in md_quick
    assert "0.8253" in md_quick  # the paper's numbers stay beside ours, for orientation


def test_which_configs_are_quick():
    assert Table2Config.quick().is_quick() and not Table2Config().is_quick()
    assert Table2Config(train_size=500).is_quick() and Table2Config(steps=400, epochs=1).is_quick() is False
    assert Table6Config.quick().is_quick() and not Table6Config().is_quick()
    cells6 = [dict(m=4, n=4, batch=16, method=m, test_acc_mean=0.5) for m in ("sgdm", "adam", "ssgd")]
    assert "Against the paper" in summarize_table6(cells6, epochs=20, eps=2.0)
    quick6 = summarize_table6(cells6, epochs=1, eps=2.0, quick=True)
    assert "Against the paper" not in quick6 and "quick run" in quick6


def _toy():
    import torch

    from ssgd.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 8).long()
    return ImageDataset("toy", x[:150], y[:150], x[150:], y[150:], num_classes=2)


def test_a_quick_run_says_so_in_its_report_and_plot_title(tmp_path, monkeypatch):
    titles = []
    real = table2._plot
    monkeypatch.setattr(table2, "_plot", lambda best, methods, path, title: (titles.append(title),
                                                                            real(best, methods, path, title)))
    cfg = Table2Config(batch_sizes=(32,), methods=("sgd", "ssgd"), epochs=1, lr_points=1, seeds=1, dataset="toy")
    res = cfg.run(tmp_path, progress=False, data=_toy())
    report = res.report.read_text()
    assert report.startswith("# Table 2 reproduction (quick run)") and "not judged (quick run)" in report
    assert titles and titles[0].startswith("quick run: ")
