"""Azure Functions app (Python v2 model): triggers and bindings only; logic is in shared/."""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func

from shared import api
from shared.logs import quiet_sdk_loggers
from shared.scheduler import queue_due_runs
from shared.service import RUN_QUEUE, get_services
from shared.worker import execute_run, fail_poisoned_run

# Before any client exists: the worker's root logger is at INFO, and the SDKs would log
# every HTTP request into Application Insights.
quiet_sdk_loggers()

# Function keys stay required; Entra ID (App Service authentication) sits in front of them.
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False)
def scheduled_exports(timer: func.TimerRequest) -> None:
    """Queue a run for every enabled export whose segment has a newer snapshot."""
    if timer.past_due:
        logging.getLogger(__name__).info("schedule tick is past due; running it now")
    queue_due_runs(get_services())


@app.queue_trigger(arg_name="msg", queue_name=RUN_QUEUE, connection="AzureWebJobsStorage")
async def run_worker(msg: func.QueueMessage) -> None:
    """Execute a queued run; raising lets the queue redeliver it (the run resumes)."""
    # The first call builds the storage clients and creates the queue: off the event loop.
    services = await asyncio.to_thread(get_services)
    await execute_run(services, msg.get_body(), attempt=msg.dequeue_count or 1)


@app.queue_trigger(
    arg_name="msg", queue_name=f"{RUN_QUEUE}-poison", connection="AzureWebJobsStorage"
)
def run_poisoned(msg: func.QueueMessage) -> None:
    """The queue gave up on a run: mark it failed with its last error."""
    fail_poisoned_run(get_services(), msg.get_body(), attempts=None)


@app.route(route="exports", methods=["GET"])
def exports_list(req: func.HttpRequest) -> func.HttpResponse:
    return api.list_exports(req)


@app.route(route="exports/{name}", methods=["GET"])
def export_get(req: func.HttpRequest) -> func.HttpResponse:
    return api.get_export(req)


@app.route(route="exports/{name}", methods=["PUT"])
def export_put(req: func.HttpRequest) -> func.HttpResponse:
    return api.put_export(req)


@app.route(route="exports/{name}", methods=["DELETE"])
def export_delete(req: func.HttpRequest) -> func.HttpResponse:
    return api.delete_export(req)


@app.route(route="exports/{name}/runs", methods=["POST"])
def run_start(req: func.HttpRequest) -> func.HttpResponse:
    return api.start_export_run(req)


@app.route(route="exports/{name}/runs/{run_id}", methods=["GET"])
def run_get(req: func.HttpRequest) -> func.HttpResponse:
    return api.get_run(req)
