"""A flow run whose process died (worker SIGKILLed, node lost) must not stay RUNNING for ever.

Prefect 3.7 has no built-in zombie detection, but flow runs emit heartbeat events
(PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds apart). This automation marks a flow run CRASHED when its heartbeats
stop without a final state, after which `prefect flow-run retry` accepts it (measured: CRASHED ~80 s after the
kill with a 30 s heartbeat). The retry is safe: the stages resume from what they finished.
"""

from __future__ import annotations

import logging
from datetime import timedelta

log = logging.getLogger("selftrain.flows")

AUTOMATION = "selftrain: flow runs without heartbeat are crashed"
HEARTBEAT_S = 30  # Prefect's minimum; its default (180 s) would leave a dead run RUNNING for ~10 minutes
MISSED = 3  # heartbeats missed before a run counts as dead (one late heartbeat under load is not a death)


def zombie_automation(heartbeat_s: int = HEARTBEAT_S):  # noqa: ANN201 - a prefect Automation
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    final = ["Completed", "Failed", "Cancelled", "Crashed"]
    return Automation(
        name=AUTOMATION,
        description=f"A flow run with no heartbeat for {MISSED * heartbeat_s} s and no final state is CRASHED.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in final)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=MISSED * heartbeat_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {MISSED * heartbeat_s} s: its process died; "
                "`prefect flow-run retry` resumes it from the finished stages",
            )
        ],
    )


def ensure_zombie_automation(heartbeat_s: int = HEARTBEAT_S) -> None:
    """Create the automation on the server at PREFECT_API_URL unless one with its name exists."""
    from prefect.automations import Automation

    try:
        Automation.read(name=AUTOMATION)
        return
    except ValueError:
        pass
    zombie_automation(heartbeat_s).create()
    log.info("created the Prefect automation %r", AUTOMATION)
