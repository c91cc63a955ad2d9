"""Metric names are renamed in one place, and estimated_finish is computed in one place."""

from __future__ import annotations

from registry.job_metrics import api_metrics, checkpoint_metrics, estimated_finish, eval_metrics, results_csv


def test_core_metric_names_become_the_api_names_and_unknown_ones_are_dropped() -> None:
    core = {"step": 4, "loss": 1.5, "accuracy": 0.5, "eval_loss": 2.0, "eval_accuracy": 0.25, "other": 1}
    assert api_metrics(core) == {
        "step": 4,
        "train_loss": 1.5,
        "train_mean_token_accuracy": 0.5,
        "valid_loss": 2.0,
        "valid_mean_token_accuracy": 0.25,
        "full_valid_loss": 2.0,  # every validation pass covers the whole set
        "full_valid_mean_token_accuracy": 0.25,
    }
    checkpoint = {"step": 4, "loss": 1.5, "accuracy": 0.5, "learning_rate": 1e-3, "eval_loss": 2.0}
    assert checkpoint_metrics(checkpoint) == {
        "step": 4,
        "train_loss": 1.5,
        "train_mean_token_accuracy": 0.5,
        "valid_loss": 2.0,
        "full_valid_loss": 2.0,
    }
    assert eval_metrics(7, {"loss": 0.5, "accuracy": 0.75, "tokens": 9.0}) == {
        "step": 7,
        "valid_loss": 0.5,
        "valid_mean_token_accuracy": 0.75,
        "full_valid_loss": 0.5,
        "full_valid_mean_token_accuracy": 0.75,
    }


def test_results_csv_has_openai_columns_and_one_row_per_step() -> None:
    history = [
        {"step": 1, "loss": 2.5, "accuracy": 0.25, "learning_rate": 1e-3},
        {"step": 2, "loss": 2.0, "accuracy": 0.5},
        {"step": 2, "eval_loss": 2.25, "eval_accuracy": 0.375},  # the validation pass after step 2
    ]
    assert results_csv(history).splitlines() == [
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,full_valid_loss,"
        "full_valid_mean_token_accuracy",
        "1,2.5,0.25,,,,",
        "2,2,0.5,2.25,0.375,2.25,0.375",
    ]
    assert results_csv([]).count("\n") == 1  # the header alone


def test_estimated_finish_from_training_eta_or_from_the_pace_so_far() -> None:
    assert estimated_finish(1_000, eta_seconds=9.2) == 1_010  # rounded up
    # 10 of 40 steps in the 100 s since the start: 400 s in all
    assert estimated_finish(1_100, started_at=1_000, step=10, total_steps=40) == 1_400
    assert estimated_finish(1_100, started_at=None, step=10, total_steps=40) is None
    assert estimated_finish(1_100, started_at=1_000, step=0, total_steps=40) is None
    assert estimated_finish(1_100, started_at=1_000, step=10, total_steps=None) is None


def test_answer_metrics_are_reported_under_their_names_and_add_result_columns() -> None:
    measured = {"loss": 1.5, "accuracy": 0.5, "exact_match": 0.25, "contains": 0.75, "tokens": 9}
    assert eval_metrics(4, measured) == {
        "step": 4,
        "valid_loss": 1.5,
        "valid_mean_token_accuracy": 0.5,
        "eval_exact_match": 0.25,
        "eval_contains": 0.75,
        "full_valid_loss": 1.5,
        "full_valid_mean_token_accuracy": 0.5,
    }
    assert checkpoint_metrics({"step": 4, "eval_exact_match": 0.25})["eval_exact_match"] == 0.25
    history = [{"step": 1, "loss": 2.0}, {"step": 1, "eval_exact_match": 0.5, "eval_contains": 1.0}]
    assert results_csv(history).splitlines() == [
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,full_valid_loss,"
        "full_valid_mean_token_accuracy,eval_exact_match,eval_contains",
        "1,2,,,,,,0.5,1",
    ]
