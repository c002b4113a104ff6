"""Fixtures of the graceful-shutdown tests: real service processes started with the
environment tests/conftest.py gives them, and the grace period the manifests allow them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ServiceProcess, _rabbitmqctl, free_port, service_env
from tests.unit.deploy.manifests import of_kind, pod_spec, render


@pytest.fixture(scope="session")
def amqp_url(amqp_url: str) -> Iterator[str]:
    """A vhost of their own: session-long workers of other test folders (the campaigns
    worker) consume the same queue names in the shared one and would take their messages."""
    base, _, vhost = amqp_url.rpartition("/")
    own = f"{vhost}_deploy"
    _rabbitmqctl("add_vhost", own)
    _rabbitmqctl("set_permissions", "-p", own, "guest", ".*", ".*", ".*")
    yield f"{base}/{own}"
    _rabbitmqctl("delete_vhost", own)


@pytest.fixture
def start_process(amqp_url: str, test_database: str) -> Iterator[Callable[..., ServiceProcess]]:
    """Like `spawn`, on a port the kernel picked; every process is killed at the end."""
    started: list[ServiceProcess] = []

    def _start(service: str, process: str, **env: str) -> ServiceProcess:
        p = ServiceProcess(service, process, service_env(service, amqp_url, **env), free_port())
        started.append(p)
        return p

    yield _start
    for p in started:
        p.close()


def grace_period(service: str, process: str) -> int:
    """terminationGracePeriodSeconds of the process's Deployment in the prod overlay."""
    dep = of_kind(render("prod"), "Deployment")[f"pm-{service}-{process}"]
    seconds: int = pod_spec(dep)["terminationGracePeriodSeconds"]
    return seconds
