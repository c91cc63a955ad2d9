"""registry.queue: the Celery client's settings, publishing by task name, failing fast without a broker."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import redis
from kombu import Connection

from registry.queue import (
    QUEUE,
    REDIS_VISIBILITY_TIMEOUT_S,
    TRAIN_TASK,
    BrokerUnavailable,
    check_broker,
    enqueue_training,
    make_celery,
)
from registry.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_BROKER = "redis://127.0.0.1:1/0"


def test_the_app_acks_late_and_takes_one_message_at_a_time(tmp_path: Path) -> None:
    conf = make_celery(Settings(data_dir=tmp_path)).conf
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert conf.task_default_queue == QUEUE == "diablo"
    assert conf.broker_connection_retry_on_startup is True


def test_the_default_broker_is_sqlite_under_a_data_dir_that_is_created(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "not" / "yet")
    app = make_celery(settings)
    assert app.conf.broker_url == f"sqla+sqlite:///{tmp_path / 'not' / 'yet' / 'broker.db'}"
    assert (tmp_path / "not" / "yet").is_dir()
    assert "visibility_timeout" not in app.conf.broker_transport_options


def test_redis_gets_a_visibility_timeout_and_the_configured_queue(tmp_path: Path) -> None:
    app = make_celery(Settings(data_dir=tmp_path, broker_url=REDIS_URL, queue_name="other"))
    assert app.conf.broker_transport_options["visibility_timeout"] == REDIS_VISIBILITY_TIMEOUT_S
    assert app.conf.task_default_queue == "other"
    assert app.conf.task_routes[TRAIN_TASK] == {"queue": "other"}


def take_message(broker_url: str, queue: str):
    with Connection(broker_url) as connection:
        return connection.default_channel.basic_get(queue, no_ack=True)


def test_enqueue_training_sends_the_task_by_name_on_the_sqlite_broker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, queue_name="jobs")
    task_id = enqueue_training("ftjob-123", settings)
    message = take_message(settings.broker_url, "jobs")
    assert message.headers["task"] == TRAIN_TASK and message.headers["id"] == task_id
    assert message.decode()[0] == ["ftjob-123"]
    assert take_message(settings.broker_url, "jobs") is None


@pytest.mark.integration
def test_enqueue_training_on_redis(tmp_path: Path) -> None:
    queue = f"diablo-test-{secrets.token_hex(6)}"
    settings = Settings(data_dir=tmp_path, broker_url=REDIS_URL, queue_name=queue)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        check_broker(settings)
        task_id = enqueue_training("ftjob-456", settings)
        assert client.llen(queue) == 1
        message = take_message(REDIS_URL, queue)
        assert (message.headers["task"], message.headers["id"]) == (TRAIN_TASK, task_id)
    finally:
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()


def test_a_down_broker_raises_broker_unavailable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=DOWN_BROKER)
    with pytest.raises(BrokerUnavailable, match="could not enqueue job ftjob-789"):
        enqueue_training("ftjob-789", settings)
    with pytest.raises(BrokerUnavailable):
        check_broker(settings)
