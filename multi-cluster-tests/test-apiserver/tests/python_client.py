#!/usr/bin/python3
"""Drives mesh-test-apiserver with the official Kubernetes Python client
(Debian's python3-kubernetes), the way its users write code: typed models
without apiVersion/kind, list, watch.Watch().stream() resumed from a
resourceVersion, strategic-merge / JSON / merge patches, delete, and Events
through core/v1 and events.k8s.io/v1.

Run by tests/python_client.rs with the server's kubeconfig, context and URL.
Every check raises on failure, so the exit status is non-zero; each step
prints one line, so a failure shows how far it got.

    /usr/bin/python3 python_client.py --kubeconfig KC --context lab-c1 --server URL --workdir DIR
"""

import argparse
import datetime
import json
import os
import sys

try:
    from kubernetes import client, config, dynamic, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"cannot import the Kubernetes Python client ({e}); "
             "install Debian's python3-kubernetes (scripts/setup.sh does)")

NS = "py"


class Failed(Exception):
    """A check failed: what was expected and what came back."""


def check(cond, what, got=None):
    if not cond:
        raise Failed(f"{what}" + ("" if got is None else f"; got {got!r}"))


def step(msg):
    print(f"ok: {msg}", flush=True)


def stream_until(w, func, *args, want, on_event=None, **kwargs):
    """Collects watch events (BOOKMARKs apart) until `want` arrived, calling
    `on_event(n, event)` after each (to make the next change while the
    watch stays open). The server ends the watch after timeout_seconds, so
    a missing event fails instead of hanging."""
    events, bookmarks = [], []
    for ev in w.stream(func, *args, timeout_seconds=20, _request_timeout=30, **kwargs):
        if ev["type"] == "BOOKMARK":
            bookmarks.append(ev)
            if len(events) >= want:
                break
            continue
        events.append(ev)
        if on_event:
            on_event(len(events), ev)
        if len(events) >= want and not kwargs.get("allow_watch_bookmarks"):
            break
    w.stop()
    return events, bookmarks


def rv(obj):
    return int(obj.metadata.resource_version)


def configmaps(core, rv0):
    """Create without apiVersion/kind, list, patch three ways, delete, and a
    watch resumed from rv0 that sees exactly the changes after it."""
    made = core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="before"), data={"a": "1"}))
    check((made.api_version, made.kind) == ("v1", "ConfigMap"),
          "a create without apiVersion/kind gets the URL's", (made.api_version, made.kind))
    step("create without apiVersion/kind")

    listed = core.list_namespaced_config_map(NS)
    check([c.metadata.name for c in listed.items] == ["before"], "list shows the ConfigMap",
          [c.metadata.name for c in listed.items])
    resume = listed.metadata.resource_version
    check(int(resume) >= rv(made), "the list's resourceVersion covers the create", resume)
    step(f"list (resourceVersion {resume})")

    # Two changes before the watch starts (replayed from the history), the
    # rest while it runs (live), all after `resume`; none of "before".
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w", labels={"app": "web"}),
                               data={"k": "0"}))
    core.patch_namespaced_config_map("w", NS, {"data": {"strategic": "yes"}})

    dyn = dynamic.DynamicClient(client.ApiClient(), cache_file=os.path.join(WORKDIR, "discovery.json"))
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")

    def live(n, _ev):
        if n == 2:
            # JSON patch: the client sends a list body as application/json-patch+json.
            core.patch_namespaced_config_map("w", NS, [{"op": "add", "path": "/data/json", "value": "yes"}])
        elif n == 3:
            dyn.patch(cms, name="w", namespace=NS, body={"data": {"k": None, "merge": "yes"}},
                      content_type="application/merge-patch+json")
        elif n == 4:
            core.delete_namespaced_config_map("w", NS)

    w = watch.Watch()
    events, bookmarks = stream_until(w, core.list_namespaced_config_map, NS, want=5,
                                     on_event=live, resource_version=resume,
                                     allow_watch_bookmarks=True)
    kinds = [(e["type"], e["object"].metadata.name) for e in events]
    check(kinds == [("ADDED", "w"), ("MODIFIED", "w"), ("MODIFIED", "w"), ("MODIFIED", "w"),
                    ("DELETED", "w")],
          "the watch from the list's resourceVersion sees the changes after it, in order, "
          "and nothing of 'before'", kinds)
    rvs = [rv(e["object"]) for e in events]
    check(rvs == sorted(rvs) and len(set(rvs)) == len(rvs) and rvs[0] > int(resume),
          "resourceVersions increase after the resume point", rvs)
    check(isinstance(events[0]["object"], client.V1ConfigMap), "events carry typed objects",
          type(events[0]["object"]))
    data = [e["object"].data for e in events]
    check(data[1] == {"k": "0", "strategic": "yes"}, "strategic merge patch merged", data[1])
    check(data[2] == {"k": "0", "strategic": "yes", "json": "yes"}, "JSON patch applied", data[2])
    check(data[3] == {"strategic": "yes", "json": "yes", "merge": "yes"},
          "merge patch applied (null removes)", data[3])
    check(bookmarks and int(bookmarks[-1]["raw_object"]["metadata"]["resourceVersion"]) >= rvs[-1],
          "allowWatchBookmarks=True gets BOOKMARKs at or after the last change",
          [b["raw_object"] for b in bookmarks])
    step(f"watch resumed at {resume}: {len(events)} events in order, {len(bookmarks)} bookmark(s)")

    try:
        core.read_namespaced_config_map("w", NS)
        raise Failed("the deleted ConfigMap is still readable")
    except ApiException as e:
        check(e.status == 404, "a deleted object is 404", e.status)
    core.delete_namespaced_config_map("before", NS)
    check(core.list_namespaced_config_map(NS).items == [], "delete emptied the namespace")
    step("patch (strategic, JSON, merge) and delete")


def raw(method, *args, **kwargs):
    """The JSON a client method gets, without the client's models.

    A legacy Event (no eventTime) read through events.k8s.io/v1 has
    `"eventTime": null`, as kube-apiserver answers, and this client's
    EventsV1Event model refuses that however its Configuration is set
    (models validate with a fresh Configuration); its users read such
    Events this way."""
    return json.loads(method(*args, _preload_content=False, **kwargs).data)


def events_both_ways(core, events_v1, svc):
    """An Event written through each API is read, listed and watched through
    both, with kube-apiserver's field conversion."""
    ref = dict(api_version="v1", kind="Service", name=svc.metadata.name, namespace=NS,
               uid=svc.metadata.uid)
    start = core.list_namespaced_event(NS).metadata.resource_version
    now = datetime.datetime.now(datetime.timezone.utc)

    # As a controller with client-go's new recorder writes it (and kube-rs').
    new = events_v1.create_namespaced_event(NS, client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="web.new"),
        event_time=now, action="Export", reason="MeshworkInvalidConfig", type="Warning",
        note="service.meshwork.io/global: \"yes-please\" is not true or false",
        reporting_controller="mesh-apiserver", reporting_instance="m-0",
        regarding=client.V1ObjectReference(**ref)))
    check(new.api_version == "events.k8s.io/v1" and new.note.startswith("service.meshwork.io")
          and new.regarding.uid == svc.metadata.uid,
          "an events.k8s.io create without apiVersion/kind answers in its schema", new)
    as_core = core.read_namespaced_event("web.new", NS)
    check(as_core.api_version == "v1" and as_core.message == new.note
          and as_core.reason == "MeshworkInvalidConfig" and as_core.type == "Warning"
          and as_core.involved_object.name == svc.metadata.name
          and as_core.involved_object.uid == svc.metadata.uid
          and as_core.reporting_component == "mesh-apiserver"
          and as_core.reporting_instance == "m-0" and as_core.action == "Export"
          and as_core.event_time == new.event_time
          and as_core.first_timestamp is None and as_core.count is None,
          "the events.k8s.io Event read through core/v1 has its fields converted", as_core)
    step("events.k8s.io/v1 create, core/v1 read")

    # As the kubelet (client-go's legacy recorder) writes it.
    old = core.create_namespaced_event(NS, client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="web.old"),
        involved_object=client.V1ObjectReference(**ref), reason="Synced", type="Normal",
        message="synced", source=client.V1EventSource(component="mesh-lab", host="n1"),
        first_timestamp=now, last_timestamp=now, count=3))
    check(old.kind == "Event" and old.api_version == "v1", "core create without apiVersion/kind",
          (old.api_version, old.kind))
    as_new = raw(events_v1.read_namespaced_event, "web.old", NS)
    stamp = old.first_timestamp
    check(as_new["apiVersion"] == "events.k8s.io/v1" and as_new["note"] == "synced"
          and as_new["regarding"]["name"] == svc.metadata.name
          and as_new["regarding"]["uid"] == svc.metadata.uid and as_new["deprecatedCount"] == 3
          and as_new["deprecatedSource"] == {"component": "mesh-lab", "host": "n1"}
          and as_new["deprecatedFirstTimestamp"] == raw(core.read_namespaced_event, "web.old",
                                                        NS)["firstTimestamp"]
          and as_new["eventTime"] is None and "reportingController" not in as_new
          and "message" not in as_new and stamp is not None,
          "the core Event read through events.k8s.io/v1 has its fields converted", as_new)
    step("core/v1 create, events.k8s.io/v1 read")

    # Lists with each API's selectors (kubectl describe's on core/v1).
    sel = (f"involvedObject.name={svc.metadata.name},involvedObject.namespace={NS},"
           f"involvedObject.kind=Service,involvedObject.uid={svc.metadata.uid}")
    names = sorted(e.metadata.name for e in core.list_namespaced_event(NS, field_selector=sel).items)
    check(names == ["web.new", "web.old"], "core/v1 lists both with kubectl describe's selector", names)
    warn = core.list_namespaced_event(NS, field_selector="type=Warning,source=").items
    check([e.metadata.name for e in warn] == ["web.new"], "core/v1 type and source selectors",
          [e.metadata.name for e in warn])
    names = sorted(e["metadata"]["name"] for e in raw(
        events_v1.list_namespaced_event, NS,
        field_selector=f"regarding.name={svc.metadata.name},regarding.kind=Service")["items"])
    check(names == ["web.new", "web.old"], "events.k8s.io/v1 lists both with regarding.*", names)
    step("list through both APIs with field selectors")

    # Watches through each API see the writes of both, in order.
    for api, label in ((core, "core/v1"), (events_v1, "events.k8s.io/v1")):
        # Raw objects through events.k8s.io/v1: see raw().
        w = watch.Watch() if api is core else watch.Watch(return_type="object")
        evs, _ = stream_until(w, api.list_namespaced_event, NS, want=2,
                              resource_version=start)
        got = [(e["type"], e["raw_object"]["apiVersion"], e["raw_object"]["metadata"]["name"])
               for e in evs]
        want_av = "v1" if api is core else "events.k8s.io/v1"
        check(got == [("ADDED", want_av, "web.new"), ("ADDED", want_av, "web.old")],
              f"a {label} watch sees both Events in its schema", got)
        text = [e["raw_object"].get("message" if api is core else "note") for e in evs]
        check(text == [new.note, "synced"], f"{label} watch objects are converted", text)
    step("watch through both APIs")

    events_v1.delete_namespaced_event("web.old", NS)
    core.delete_namespaced_event("web.new", NS)
    for api in (core, events_v1):
        check(raw(api.list_namespaced_event, NS)["items"] == [],
              "deletes through either API remove both")
    step("delete through both APIs")


def main():
    global WORKDIR
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--context", required=True)
    p.add_argument("--server", required=True, help="the URL the kubeconfig must point at")
    p.add_argument("--workdir", required=True, help="where the dynamic client caches discovery")
    args = p.parse_args()
    WORKDIR = args.workdir

    config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    host = client.Configuration.get_default_copy().host
    check(host == args.server, "the kubeconfig points at the server", host)
    core = client.CoreV1Api()
    events_v1 = client.EventsV1Api()

    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    check(ns.kind == "Namespace", "namespace create without apiVersion/kind", ns.kind)
    configmaps(core, ns.metadata.resource_version)
    svc = core.create_namespaced_service(NS, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    events_both_ways(core, events_v1, svc)
    core.delete_namespace(NS)
    print("all Python client checks passed", flush=True)


WORKDIR = None

if __name__ == "__main__":
    try:
        main()
    except (Failed, ApiException) as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
