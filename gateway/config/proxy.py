"""Proxy settings: where connect, refresh, subscribe, publish, sub_refresh and rpc events
are sent (Centrifugo v6 ``client.proxy.*``, ``channel.proxy.*``, ``rpc.proxy``, ``proxies``).

A proxy is an HTTP endpoint plus its options. Channel namespaces and RPC namespaces name
the proxy they use (``subscribe_proxy_name`` ..., ``"default"`` meaning the section's own
``channel.proxy.<kind>`` / ``rpc.proxy``); names are resolved here, at load time, so an
unknown name or a missing endpoint is a config error and the hot path holds the endpoint
itself. Only HTTP(S) endpoints are implemented; a gRPC address is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.table import Table

__all__ = [
    "DEFAULT_PROXY_NAME",
    "NamedProxies",
    "ProxyEndpoint",
    "RpcConfig",
    "RpcOptions",
    "read_named_proxies",
    "read_proxy",
    "read_rpc",
    "resolve_proxy",
]

DEFAULT_PROXY_NAME = "default"

# Centrifugo's default proxy timeout.
_DEFAULT_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class ProxyEndpoint:
    """One configured HTTP proxy (Centrifugo ``Proxy``)."""

    name: str
    endpoint: str
    timeout: float = _DEFAULT_TIMEOUT
    #: Upgrade-request headers forwarded to the backend, lower-cased (``http_headers``).
    http_headers: tuple[str, ...] = ()
    #: Headers added to every request (``http.static_headers``); forwarded ones win.
    static_headers: tuple[tuple[str, str], ...] = ()
    #: Names from the connect command's emulated ``headers`` map to forward, lower-cased.
    emulated_headers: tuple[str, ...] = ()
    include_connection_meta: bool = False
    #: Payloads travel as base64 (``b64data``) instead of raw JSON (``data``).
    binary_encoding: bool = False


NamedProxies = dict[str, ProxyEndpoint]


def read_proxy(t: Table, name: str) -> ProxyEndpoint:
    """The proxy fields of a table (``endpoint``, ``timeout``, headers ...); ``grpc.*`` and
    ``http.tls`` / ``http.status_to_code_transforms`` stay unread (in the warning)."""
    d = ProxyEndpoint(name, "")
    http = t.table("http")
    static = http.table("static_headers")
    static_headers = []
    for key in static.names():
        value = static.get_str(key, "")
        static_headers.append((key, value))
    static.finish()
    http.finish()
    endpoint = t.get_str("endpoint", d.endpoint).strip()
    if endpoint and not endpoint.startswith(("http://", "https://")):
        t.error("endpoint", "only http:// and https:// proxy endpoints are implemented (not gRPC)")
    return ProxyEndpoint(
        name=name,
        endpoint=endpoint,
        timeout=t.duration("timeout", d.timeout, positive=True),
        http_headers=tuple(h.lower() for h in t.str_list("http_headers", ())),
        static_headers=tuple(static_headers),
        emulated_headers=tuple(h.lower() for h in t.str_list("emulated_headers", ())),
        include_connection_meta=t.get_bool("include_connection_meta", d.include_connection_meta),
        binary_encoding=t.get_bool("binary_encoding", d.binary_encoding),
    )


def read_named_proxies(root: Table) -> NamedProxies:
    """``proxies = [{name, endpoint, ...}]``: names must be unique and not ``default``."""
    named: NamedProxies = {}
    for item in root.table_list("proxies"):
        name = item.get_str("name", "")
        if not name:
            item.error("name", "required")
        elif name == DEFAULT_PROXY_NAME:
            item.error("name", f"{DEFAULT_PROXY_NAME!r} is reserved (it names the section's own proxy)")
        elif name in named:
            item.error("name", f"duplicate proxy name {name!r}")
        proxy = read_proxy(item, name)
        if not proxy.endpoint:
            item.error("endpoint", "required")
        item.finish()
        if name:
            named[name] = proxy
    return named


def resolve_proxy(t: Table, enabled_key: str, name_key: str, default: ProxyEndpoint | None,
                  default_key: str, named: NamedProxies) -> ProxyEndpoint | None:
    """The proxy a namespace uses for one event: ``None`` unless ``enabled_key`` is true;
    ``name_key`` (``"default"`` unless set) picks ``default`` or a named proxy."""
    enabled = t.get_bool(enabled_key, False)
    name = t.get_str(name_key, DEFAULT_PROXY_NAME) or DEFAULT_PROXY_NAME
    if not enabled:
        return None
    if name == DEFAULT_PROXY_NAME:
        if default is None or not default.endpoint:
            t.error(enabled_key, f"needs {default_key}.endpoint (or {name_key} naming one of proxies)")
            return None
        return default
    proxy = named.get(name)
    if proxy is None:
        t.error(name_key, f"no proxy named {name!r} in proxies")
    return proxy


# -- rpc --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RpcOptions:
    """What an RPC namespace does with a method nobody registered locally."""

    proxy: ProxyEndpoint | None = None


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """``rpc.*``: the RPC proxy per method namespace (``ping`` is not implemented)."""

    without_namespace: RpcOptions = RpcOptions()
    namespaces: tuple[tuple[str, RpcOptions], ...] = ()
    namespace_boundary: str = ":"

    @property
    def proxied(self) -> bool:
        """Whether any RPC namespace is proxied (then unknown namespaces answer 104, proxy
        switched off 108, as in Centrifugo)."""
        return self.without_namespace.proxy is not None or any(o.proxy is not None for _, o in self.namespaces)

    def options_for(self, method: str) -> RpcOptions | None:
        """The options of ``method``'s namespace (text before ``namespace_boundary``); ``None``
        when that namespace is not configured."""
        name, sep, _ = method.partition(self.namespace_boundary)
        if not sep:
            return self.without_namespace
        for ns, opts in self.namespaces:
            if ns == name:
                return opts
        return None


def _read_rpc_options(t: Table, default: ProxyEndpoint | None, named: NamedProxies) -> RpcOptions:
    return RpcOptions(resolve_proxy(t, "proxy_enabled", "proxy_name", default, "rpc.proxy", named))


def read_rpc(t: Table, named: NamedProxies) -> RpcConfig:
    proxy_table = t.table("proxy")
    default = read_proxy(proxy_table, DEFAULT_PROXY_NAME)
    proxy_table.finish()
    without_table = t.table("without_namespace")
    without = _read_rpc_options(without_table, default, named)
    without_table.finish()
    namespaces: list[tuple[str, RpcOptions]] = []
    for ns in t.table_list("namespaces"):
        name = ns.get_str("name", "")
        if not name:
            ns.error("name", "required")
        elif any(name == other for other, _ in namespaces):
            ns.error("name", f"duplicate rpc namespace name {name!r}")
        namespaces.append((name, _read_rpc_options(ns, default, named)))
        ns.finish()
    boundary = t.get_str("namespace_boundary", ":")
    if not boundary:
        t.error("namespace_boundary", "must not be empty")
        boundary = ":"
    return RpcConfig(without, tuple(namespaces), boundary)
