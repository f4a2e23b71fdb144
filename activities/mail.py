"""Sending e-mail through the configured SMTP server (settings: host, port, TLS, from)."""
from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from settings import Settings


def _send(settings: Settings, message: EmailMessage) -> None:
    if settings.smtp_tls == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=20,
                                                context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=20)
    with client:
        if settings.smtp_tls == "starttls":
            client.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            client.login(settings.smtp_username, settings.smtp_password)
        client.send_message(message)


async def send_mail(settings: Settings, message: EmailMessage) -> None:
    """Send one message (smtplib in a thread); SMTP errors propagate so the activity retries."""
    if "From" not in message:
        message["From"] = settings.smtp_from
    await asyncio.to_thread(_send, settings, message)
