"""The security service of a node (``node.ext["security"]``): settings, policy, labels, hooks."""

from __future__ import annotations

from typing import Any

from phip.core.hooks import Point, WriteEvent
from phip.fhir.errors import Issue
from phip.security import derived
from phip.security.access import RELATION_TYPES, Policy
from phip.security.config import SecurityConfig
from phip.security.labels import LabelRules
from phip.security.tokens import ExternalIssuer

#: writes of these types can take access away: cached positive decisions are dropped


class SecurityService:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.config = SecurityConfig.load(getattr(node, "data", None))
        self.policy = Policy(self.config)
        self.labels = LabelRules.load(self.config.label_rules)

    def install(self) -> None:
        node = self.node
        node.ext["security"] = self
        node.store.access = self.policy
        hooks = node.store.hooks
        hooks.register(Point.BEFORE_WRITE, self.before_write)  # imports are labelled as they load
        hooks.register(Point.AFTER_WRITE, self.after_write, on_import=False)
        hooks.register(Point.AFTER_WRITE, derived.after_person)  # also for the master index's batch
        hooks.register(Point.AFTER_IMPORT, self.after_import)
        oidc = self.config.oidc
        if oidc:
            iss = ExternalIssuer(oidc["issuer"], jwks_url=oidc.get("jwks_url"), jwks_file=oidc.get("jwks_file"),
                                 audience=oidc.get("audience"), claims=oidc.get("claims"),
                                 default_role=oidc.get("default_role"), algorithms=oidc.get("algorithms"))
            node.tokens.external[iss.issuer] = iss

    def token_url(self, request: Any) -> str:
        return str(request.base_url).rstrip("/") + "/auth/token"

    # -- hooks ------------------------------------------------------------------------------------
    def before_write(self, tx: Any, rtype: str, resource: dict[str, Any], method: str) -> list[Issue]:
        if rtype in self.labels.types:
            self.labels.apply(resource)
        return []

    def after_write(self, tx: Any, event: WriteEvent) -> None:
        derived.after_write(tx, event)
        if event.resource_type in RELATION_TYPES:
            self.policy.forget()

    def after_import(self, store: Any, loaded: dict[str, int]) -> None:
        """Label what the import brought in and rebuild the derived tables it touched."""
        from phip.core.access import as_system

        with store.engine.connect() as conn:
            found = self.labels.candidates(conn)
        repo = store.repository()
        with as_system():
            for rtype, rid in found:
                row = repo.read(rtype, rid, view=False)
                doc = row.resource()
                if self.labels.apply(doc):
                    repo.meta_change(rtype, rid, {"security": doc["meta"]["security"]}, True)
        types = {t for t in ("Patient", "Consent", "Person") if loaded.get(t)}
        if types:
            derived.rebuild(store, {"Patient", "Consent"} if "Person" in types else types)
