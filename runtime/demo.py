"""The demo tenant of the embedded defaults: the original-design refund procedure, published,
wired to the local demo shop (Shopify wire format), with its secrets stored encrypted."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.engine import Engine

from connectors.catalog import builtin_connectors
from db.engine import session_scope
from db.errors import NotFound
from db.procedures import publish
from db.secrets import set_secret
from db.tenants import create_tenant, get_tenant, new_api_key, update_tenant_settings
from procedures.loader import definition_sha256, load_procedure
from security.secrets import SecretBox
from settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_PROCEDURES = ("refund-original.json", "refund-conversation.yaml")
DEMO_TENANT = "demo"


def ensure_demo_tenant(settings: Settings, engine: Engine, shop_url: str) -> tuple[str, str]:
    """Create (once) the demo tenant and publish the demo procedures; returns (tenant id, API key)."""
    key_file = settings.data_dir / "demo.json"
    box = SecretBox.from_setting(settings.secret_keys)
    host = shop_url.split("://", 1)[-1].rstrip("/")
    with session_scope(engine) as session:
        try:
            tenant = get_tenant(session, DEMO_TENANT)
            stored = json.loads(key_file.read_text()) if key_file.exists() else {}
            key = stored.get("api_key") or new_api_key(session, tenant.id)
        except NotFound:
            tenant, key = create_tenant(session, DEMO_TENANT)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps({"tenant": tenant.id, "api_key": key}))
        key_file.chmod(0o600)
        update_tenant_settings(session, tenant.id, allowed_hosts=[host],
                               connector_base_urls={"shopify": f"{shop_url.rstrip('/')}/admin/api/2024-01"})
        set_secret(session, box, tenant.id, "shop_domain", host)
        set_secret(session, box, tenant.id, "shop_token", "shpat_demo")
        for name in DEMO_PROCEDURES:
            path = EXAMPLES / name
            if not path.exists():
                continue
            text = path.read_text()
            definition = load_procedure(text, name, builtin_connectors())
            publish(session, tenant.id, definition["procedure"], text,
                    "json" if name.endswith(".json") else "yaml", definition, definition_sha256(definition))
    return tenant.id, key
