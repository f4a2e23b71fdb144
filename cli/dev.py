"""`flywheel dev`: the whole product on one laptop, on embedded defaults.

Starts the Temporal dev server (persistent db file, UI), a local SMTP mailbox, the demo shop,
the worker and the API; creates the demo tenant; prints the URLs and the demo API key.
Ctrl-C (or SIGTERM) stops everything; state stays in the data dir (.flywheel/).
"""
from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn
from temporalio.client import Client

from activities.services import Services
from api.app import create_app
from channels.forwarder import Forwarder
from demo.server import ThreadedServer
from demo.shop import ShopState, create_shop_app
from runtime.demo import ensure_demo_tenant
from runtime.devserver import DevServer
from runtime.keys import ensure_keys
from runtime.mailcatcher import MailCatcher, text_body
from runtime.workers import activities_for, build_worker
from settings import get_settings


def _print_links(msg) -> None:
    print(f"\n[mail] to {msg['To']}: {msg['Subject']}")
    for line in text_body(msg).splitlines():
        if line.startswith(("Approve:", "Reject:")):
            print(f"[mail]   {line}")


async def _serve(port: int, ui_port: int, shop_port: int) -> None:
    base = ensure_keys(get_settings())
    temporal_port = int(base.temporal_address.rsplit(":", 1)[1])
    mail = MailCatcher(port=base.smtp_port, save_dir=base.data_dir / "mail", on_message=_print_links).start()
    shop = ThreadedServer(create_shop_app(ShopState()), port=shop_port).start()
    settings = base.model_copy(update={"api_port": port, "public_url": f"http://127.0.0.1:{port}"})
    server = DevServer(db_file=settings.data_dir / "temporal.db", port=temporal_port, ui_port=ui_port,
                       log_file=settings.data_dir / "temporal.log").start()
    try:
        services = Services.from_settings(settings)
        tenant, key = ensure_demo_tenant(settings, services.engine, shop.url)
        client = await Client.connect(server.address, namespace=settings.temporal_namespace)
        app = create_app(settings)
        app.state.temporal = client
        api = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=port, log_level="warning"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        api.install_signal_handlers = lambda: None
        # the channels' inbound relay (accepted webhook messages -> their conversations)
        forwarder = Forwarder.with_client(settings, services.engine, client)
        async with build_worker(client, settings.task_queue, activities_for(services)):
            forwarder.start()
            api_task = asyncio.create_task(api.serve())
            while not api.started:
                await asyncio.sleep(0.05)
            print(f"Flywheel is running.\n"
                  f"  API:          http://127.0.0.1:{port}  (docs: http://127.0.0.1:{port}/docs)\n"
                  f"  Temporal UI:  http://127.0.0.1:{ui_port}\n"
                  f"  Temporal:     {server.address}\n"
                  f"  Demo shop:    {shop.url}\n"
                  f"  Mailbox:      SMTP 127.0.0.1:{mail.port} (approval links are printed here)\n"
                  f"  Web widget:   http://127.0.0.1:{port}/widget/demo\n"
                  f"  Demo tenant:  {tenant}\n"
                  f"Try: curl -s -X POST http://127.0.0.1:{port}/v1/procedures/refund/runs "
                  f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
                  f"-d '{{\"inputs\": {{\"email\": \"alice@example.com\"}}}}'\n"
                  f"Demo API key:\n{key}", flush=True)
            await stop.wait()
            api.should_exit = True
            await api_task
            await forwarder.stop()
    finally:
        server.stop()
        shop.stop()
        mail.stop()


def run_dev(port: int = 8000, ui_port: int = 8233, shop_port: int = 8081) -> int:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(port, ui_port, shop_port))
    return 0
