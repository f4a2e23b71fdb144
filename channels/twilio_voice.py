"""Phone calls through Twilio Voice: the caller speaks, Twilio transcribes (<Gather input="speech">),
each utterance is one conversation turn (channel "voice", thread = CallSid) and the reply is
spoken with <Say>.

    POST /webhooks/{tenant}/twilio/voice          incoming call: greeting inside a speech Gather
    POST /webhooks/{tenant}/twilio/voice/turn     SpeechResult -> the turn's reply + next Gather
    POST /webhooks/{tenant}/twilio/voice/silence  nothing heard: re-prompt once, then goodbye

The caller waits, so a turn goes through the update path (`send_message` waits for the reply)
with a time limit (VOICE_TURN_S): past it, "One moment, please." and a <Redirect> back to the
same turn (same message id, so the conversation handles it once and the redirect just collects
the reply). A handed-off conversation transfers the call (<Dial> voice settings
`transfer_number`) or, without one, says goodbye and hangs up. Every URL in the TwiML is absolute
(settings.public_url) and carries the turn number `n` (the message id is "{CallSid}:{n}"); Twilio
signs it with the query, so the query is as trusted as the form. Every request is verified
(credentials looked up, form read with its limit, signature checked) before anything else, Temporal
included: with Temporal away a forged request still gets 403, not 503. A voice channel with a
`phone_number` refuses calls to any other number (403).

A replayed turn (same CallSid and `n`) is the same message id: the conversation answers it once
and the replay gets the same reply. When the caller is transferred (<Dial>: the conversation
handed off, or the turn took too long MAX_WAITS times) or told a person will call back, the
conversation is told with the `agent_action` takeover signal ("taken over by phone transfer to
+1..." / "... callback"), so it is handed off and the AI stays quiet. The hang-up arrives as a
status callback (CallStatus=completed) on /webhooks/{tenant}/twilio/status, which the operator
sets as the number's call StatusCallback URL (channels/twilio.py).
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from temporalio.client import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from api.deps import get_settings, get_temporal
from api.errors import ApiError
from api.routes.conversations import send_message  # the update path: the caller waits
from channels.config import E164
from channels.errors import ChannelError
from channels.text import inbound_text
from channels.twilio_common import PHONE, check_number, signed_form, twiml
from workflows import conversation_types as C
from workflows.conversation import HANDOFF_TEXT

log = logging.getLogger("flywheel.channels.twilio")
router = APIRouter(tags=["channels: twilio voice"])

VOICE_TURN_S = 8.0          # how long the caller waits for a turn before "One moment"
MAX_WAITS = 3               # "One moment"s per turn before giving up
MAX_PENDING = 1000          # characters of an utterance carried in a redirect URL
GREETING = "Hello! How can I help you today?"
REPROMPT = "Sorry, I didn't catch that. How can I help you?"
ONE_MOMENT = "One moment, please."
GOODBYE = "Thank you for calling. Goodbye."
TRANSFER = "Please hold while I connect you with a person from our team."
NO_TRANSFER = "A person from our team will get back to you. Goodbye."
TROUBLE = "Sorry, something went wrong on our side. Please call again later. Goodbye."


# Characters XML 1.0 does not allow: the twilio library writes them into the TwiML as they are,
# and Twilio then fails the whole document (error 12100), which ends the call.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def speakable(text: str) -> str:
    """`text` without the characters TwiML cannot carry (a form feed from a PDF article, a
    control character in an LLM's reply)."""
    return _NOT_XML.sub(" ", text)


def _url(settings: Any, tenant_id: str, what: str, **query: Any) -> str:
    base = f"{settings.public_url.rstrip('/')}/webhooks/{tenant_id}/twilio/voice/{what}"
    return f"{base}?{urlencode(query)}" if query else base


def _listen(response: VoiceResponse, settings: Any, tenant_id: str, n: int, prompt: str | None,
            tries: int = 0) -> VoiceResponse:
    """A speech Gather (prompt said inside it, so the caller can interrupt) then, when nothing was
    heard, the silence redirect."""
    gather = Gather(input="speech", action=_url(settings, tenant_id, "turn", n=n), method="POST",
                    speech_timeout="auto", timeout=5)
    if prompt:
        gather.say(prompt)
    response.append(gather)
    response.redirect(_url(settings, tenant_id, "silence", n=n, tries=tries), method="POST")
    return response


async def _call(request: Request, tenant_id: str) -> tuple[Any, dict, Any]:
    """(settings, voice settings, form) of a call request whose signature checked out."""
    params, (cfg, _) = await signed_form(request, tenant_id, "voice")
    check_number(cfg, "voice", params)
    call_sid = params.get("CallSid") or ""
    if not C.THREAD.fullmatch(call_sid):
        raise ChannelError("CallSid: missing or malformed")
    return get_settings(request), cfg, params


def _goodbye(text: str = GOODBYE) -> Response:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return twiml(str(response))


@router.post("/webhooks/{tenant_id}/twilio/voice")
async def incoming_call(tenant_id: str, request: Request) -> Response:
    """An incoming call: the greeting (voice settings `greeting`) while listening for speech."""
    settings, cfg, _ = await _call(request, tenant_id)
    greeting = str(cfg.get("greeting") or GREETING)[:2000]
    return twiml(str(_listen(VoiceResponse(), settings, tenant_id, 1, greeting)))


def _silence(settings: Any, tenant_id: str, n: int, tries: int) -> Response:
    if tries >= 1:
        return _goodbye()
    return twiml(str(_listen(VoiceResponse(), settings, tenant_id, n, REPROMPT, tries=tries + 1)))


@router.post("/webhooks/{tenant_id}/twilio/voice/silence")
async def silence(tenant_id: str, request: Request, n: int = Query(default=1, ge=1, le=100_000),
                  tries: int = Query(default=0, ge=0, le=10)) -> Response:
    """The Gather heard nothing: re-prompt once, then goodbye and hang up."""
    settings, _, _ = await _call(request, tenant_id)
    return _silence(settings, tenant_id, n, tries)


@router.post("/webhooks/{tenant_id}/twilio/voice/turn")
async def turn(tenant_id: str, request: Request, n: int = Query(default=1, ge=1, le=100_000),
               tries: int = Query(default=0, ge=0, le=10), waits: int = Query(default=0, ge=0, le=100),
               pending: str = Query(default="", max_length=MAX_PENDING)) -> Response:
    """What the caller said (SpeechResult): one conversation turn, its reply spoken, then listen."""
    settings, cfg, params = await _call(request, tenant_id)
    speech = inbound_text(params.get("SpeechResult") or "", MAX_PENDING) or inbound_text(pending, MAX_PENDING)
    if not speech:
        return _silence(settings, tenant_id, n, tries)
    client = await get_temporal(request)  # only now: a forged request never waits on Temporal
    call_sid = params.get("CallSid")
    caller = (params.get("From") or "").strip()
    customer = {"phone": caller} if PHONE.fullmatch(caller) else {}
    try:
        result = await asyncio.wait_for(
            send_message(client, settings, tenant_id, "voice", call_sid, speech, customer, f"{call_sid}:{n}"),
            timeout=VOICE_TURN_S)
    except TimeoutError:
        if waits + 1 >= MAX_WAITS:
            await _tell_handoff(client, tenant_id, call_sid, cfg)
            return _handoff(cfg, "Sorry, this is taking longer than it should.")
        response = VoiceResponse()
        response.say(ONE_MOMENT)
        # the same turn again: the conversation answers it once (same message id)
        response.redirect(_url(settings, tenant_id, "turn", n=n, waits=waits + 1, pending=speech), method="POST")
        return twiml(str(response))
    except ApiError as err:
        log.warning("voice turn refused (tenant %s, call %s): %s", tenant_id, call_sid, err.message)
        return _goodbye(TROUBLE)
    reply = speakable((result.get("reply") or {}).get("text") or "").strip()
    if result.get("status") == C.HANDED_OFF:
        await _tell_handoff(client, tenant_id, call_sid, cfg)
        return _handoff(cfg, reply)
    response = VoiceResponse()
    if reply:
        response.say(reply)
    return twiml(str(_listen(response, settings, tenant_id, n + 1, None)))


def _transfer_number(cfg: dict) -> str:
    number = str(cfg.get("transfer_number") or "").strip()
    return number if E164.fullmatch(number) else ""


async def _tell_handoff(client: Client, tenant_id: str, call_sid: str, cfg: dict) -> None:
    """The conversation learns that a person has the call now (or will call back): the
    `agent_action` takeover signal, so it is handed off and the AI stays quiet. The call goes on
    even when Temporal does not take it (logged)."""
    number = _transfer_number(cfg)
    agent = f"phone transfer to {number}" if number else "phone callback (no transfer number)"
    try:
        await client.get_workflow_handle(C.conversation_id(tenant_id, "voice", call_sid)).signal(
            "agent_action", C.AgentAction(kind="takeover", agent=agent))
    except Exception as err:  # RPCError and friends: the caller must not hear an error for it
        log.warning("voice handoff not told to the conversation (tenant %s, call %s): %s", tenant_id, call_sid, err)


def _handoff(cfg: dict, reply: str) -> Response:
    """Transfer the call to `transfer_number`, or say goodbye when there is none (the
    conversation's handoff text, "... They will reply here.", is meant for text channels)."""
    number = _transfer_number(cfg)
    response = VoiceResponse()
    reply = speakable(reply)
    if reply and reply != HANDOFF_TEXT:
        response.say(reply)
    if number:
        response.say(TRANSFER)
        response.dial(number)
    else:
        response.say(NO_TRANSFER)
        response.hangup()
    return twiml(str(response))
