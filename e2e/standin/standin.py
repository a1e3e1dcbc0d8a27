#!/usr/bin/env python3
"""
An in-memory Kubernetes API stand-in for Edgewire's end-to-end tests.

It extends kmock's ``KubernetesEmulator`` (served by ``kmock.Server``) with the
parts a real client needs: a resourceVersion-ordered event log with resumable
watches, uid/resourceVersion/generation stamping, no-op detection, optimistic
concurrency, status subresources, all four patch types, PUT, finalizers,
ownerReference garbage collection, CRD registration, discovery, server-side
Tables for ``kubectl get`` and just enough OpenAPI for ``kubectl apply``.

Usage::

    python3 standin.py --port 0 --kubeconfig /tmp/kubeconfig.yaml
    # prints "READY http://127.0.0.1:PORT" once serving; stops on SIGTERM/SIGINT.
"""
import argparse
import asyncio
import base64
import bisect
import copy
import dataclasses
import datetime
import json
import random
import re
import signal
import string
import sys
import traceback
import uuid
from typing import Any

import aiohttp.web
import attrs
import jsonpatch  # a dependency of kmock
import kmock
import yaml

VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']
LOG_LIMIT = 10_000         # events kept for watch resumption; older resourceVersions get 410 Gone
BOOKMARK_INTERVAL = 5.0    # seconds between BOOKMARK events on watches that asked for them
GC_INTERVAL = 0.5          # seconds between ownerReference garbage-collection sweeps


@dataclasses.dataclass
class Res:
    """One served resource (group/version/plural) and what the server knows about it."""
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: list = dataclasses.field(default_factory=list)
    subresources: list = dataclasses.field(default_factory=list)
    categories: list = dataclasses.field(default_factory=list)
    columns: list | None = None  # CRD additionalPrinterColumns; None = built-in kind
    singular: str = ''
    shared_store: tuple | None = None  # stored together with another API's resource (Events)

    @property
    def store(self) -> tuple[str, str]:  # all versions of a resource share one store
        return self.shared_store or (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def has_status(self) -> bool:
        return 'status' in self.subresources


def _r(gv, plural, kind, namespaced=True, short=(), subs=(), cats=()):
    group, _, version = gv.rpartition('/')
    return Res(group, version, plural, kind, namespaced, list(short), list(subs), list(cats))


BUILTINS = [
    _r('v1', 'namespaces', 'Namespace', False, ['ns'], ['status']),
    _r('v1', 'nodes', 'Node', False, ['no'], ['status']),
    _r('v1', 'secrets', 'Secret'),
    _r('v1', 'configmaps', 'ConfigMap', short=['cm']),
    _r('v1', 'services', 'Service', short=['svc'], subs=['status'], cats=['all']),
    _r('v1', 'serviceaccounts', 'ServiceAccount', short=['sa']),
    _r('v1', 'pods', 'Pod', short=['po'], subs=['status'], cats=['all']),
    _r('v1', 'events', 'Event', short=['ev']),
    _r('v1', 'endpoints', 'Endpoints', short=['ep']),
    _r('v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', short=['pvc'], subs=['status']),
    _r('apps/v1', 'deployments', 'Deployment', short=['deploy'], subs=['status', 'scale'], cats=['all']),
    _r('apps/v1', 'statefulsets', 'StatefulSet', short=['sts'], subs=['status', 'scale'], cats=['all']),
    _r('apps/v1', 'daemonsets', 'DaemonSet', short=['ds'], subs=['status'], cats=['all']),
    _r('apps/v1', 'replicasets', 'ReplicaSet', short=['rs'], subs=['status', 'scale'], cats=['all']),
    _r('batch/v1', 'jobs', 'Job', subs=['status'], cats=['all']),
    _r('coordination.k8s.io/v1', 'leases', 'Lease'),
    dataclasses.replace(_r('events.k8s.io/v1', 'events', 'Event', short=['ev']), shared_store=('', 'events')),
    _r('apiextensions.k8s.io/v1', 'customresourcedefinitions', 'CustomResourceDefinition', False,
       ['crd', 'crds'], ['status']),
    _r('rbac.authorization.k8s.io/v1', 'roles', 'Role'),
    _r('rbac.authorization.k8s.io/v1', 'rolebindings', 'RoleBinding'),
    _r('rbac.authorization.k8s.io/v1', 'clusterroles', 'ClusterRole', False),
    _r('rbac.authorization.k8s.io/v1', 'clusterrolebindings', 'ClusterRoleBinding', False),
    _r('policy/v1', 'poddisruptionbudgets', 'PodDisruptionBudget', short=['pdb'], subs=['status']),
    _r('networking.k8s.io/v1', 'networkpolicies', 'NetworkPolicy', short=['netpol']),
    _r('networking.k8s.io/v1', 'ingresses', 'Ingress', short=['ing'], subs=['status']),
]
CRD_STORE = ('apiextensions.k8s.io', 'customresourcedefinitions')
EVENTS_STORE = ('', 'events')
# core/v1 Event field <-> events.k8s.io/v1 Event field (the rest is common)
EVENT_FIELDS = {'involvedObject': 'regarding', 'message': 'note', 'count': 'deprecatedCount',
                'firstTimestamp': 'deprecatedFirstTimestamp', 'lastTimestamp': 'deprecatedLastTimestamp',
                'source': 'deprecatedSource', 'reportingComponent': 'reportingController'}
NS_STORE = ('', 'namespaces')


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def api_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or None)


# --- patch semantics ------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


KNOWN_MERGE_KEYS = {'containers': 'name', 'initContainers': 'name', 'env': 'name', 'volumes': 'name',
                    'volumeMounts': 'mountPath', 'conditions': 'type', 'imagePullSecrets': 'name'}


def strategic_merge(target: Any, patch: Any) -> Any:
    """
    Approximate strategic merge patch without schemas: a merge patch plus the directives kubectl
    emits. A list is merged item-by-item when the patch names its merge key via
    ``$setElementOrder/<field>`` or the field is a well-known keyed list; otherwise it is replaced.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'replace':
        return {k: v for k, v in patch.items() if not k.startswith('$')}
    out = dict(target) if isinstance(target, dict) else {}
    orders = {k.split('/', 1)[1]: v for k, v in patch.items() if k.startswith('$setElementOrder/')}
    for key, value in patch.items():
        if key.startswith('$deleteFromPrimitiveList/'):
            field = key.split('/', 1)[1]
            out[field] = [v for v in out.get(field) or [] if v not in value]
        if key.startswith('$'):
            continue
        order = orders.get(key) or []
        mkey = next(iter(order[0]), None) if order and isinstance(order[0], dict) else KNOWN_MERGE_KEYS.get(key)
        current = out.get(key)
        if value is None:
            out.pop(key, None)
        elif (mkey and isinstance(value, list) and isinstance(current, list)
              and all(isinstance(i, dict) and mkey in i for i in value + current)):
            items = {i[mkey]: i for i in current}
            for item in value:
                if item.get('$patch') == 'delete':
                    items.pop(item[mkey], None)
                else:
                    items[item[mkey]] = strategic_merge(items.get(item[mkey]), item)
            ordered = [o[mkey] for o in order if isinstance(o, dict) and o.get(mkey) in items]
            out[key] = [items[k] for k in ordered] + [v for k, v in items.items() if k not in ordered]
        else:
            out[key] = strategic_merge(current, value)
    if isinstance(patch.get('$retainKeys'), list):
        out = {k: v for k, v in out.items() if k in patch['$retainKeys']}
    return out


def leaves(obj: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """Field paths of a document for field ownership; lists are atomic (as in SSA's default)."""
    if isinstance(obj, dict) and obj:
        return [leaf for k, v in obj.items() for leaf in leaves(v, prefix + (k,))]
    return [(prefix, obj)] if prefix else []


def dig(obj: Any, path: tuple | list) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


# --- protobuf request bodies ----------------------------------------------------------------------
# kubectl's typed clients (`kubectl create namespace|secret|configmap|serviceaccount`) send built-in
# kinds as Kubernetes protobuf and do not fall back to JSON. Responses are always JSON (kubectl
# accepts it), so only these few request messages are decoded; field numbers from generated.proto.

def _pb_fields(buf: bytes):
    """Protobuf wire format: yield (field number, value) with varints as ints, the rest as bytes."""
    i = 0

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result
    while i < len(buf):
        tag = varint()
        wire = tag & 7
        if wire == 0:
            yield tag >> 3, varint()
        elif wire == 2:
            n = varint()
            i += n
            yield tag >> 3, buf[i - n:i]
        else:  # fixed 64/32-bit: not used by the messages below
            i += 8 if wire == 1 else 4


PB_OWNER_REF = {1: ('kind', 'str'), 3: ('name', 'str'), 4: ('uid', 'str'), 5: ('apiVersion', 'str'),
                6: ('controller', 'bool'), 7: ('blockOwnerDeletion', 'bool')}
PB_META = {1: ('name', 'str'), 2: ('generateName', 'str'), 3: ('namespace', 'str'), 5: ('uid', 'str'),
           6: ('resourceVersion', 'str'), 7: ('generation', 'int'), 11: ('labels', 'map'),
           12: ('annotations', 'map'), 13: ('ownerReferences', [PB_OWNER_REF]), 14: ('finalizers', ['str'])}
PB_KINDS = {
    'Namespace': {1: ('metadata', PB_META)},
    'ServiceAccount': {1: ('metadata', PB_META), 4: ('automountServiceAccountToken', 'bool')},
    'Secret': {1: ('metadata', PB_META), 2: ('data', 'map64'), 3: ('type', 'str'), 4: ('stringData', 'map'),
               5: ('immutable', 'bool')},
    'ConfigMap': {1: ('metadata', PB_META), 2: ('data', 'map'), 3: ('binaryData', 'map64'), 4: ('immutable', 'bool')},
}


def _pb_message(buf: bytes, schema: dict) -> dict:
    out: dict = {}
    for num, value in _pb_fields(buf):
        if num not in schema:
            continue
        name, kind = schema[num]
        if kind in ('map', 'map64'):
            entry = dict(_pb_fields(value))
            v = entry.get(2, b'')
            out.setdefault(name, {})[entry.get(1, b'').decode()] = \
                base64.b64encode(v).decode() if kind == 'map64' else v.decode()
        elif isinstance(kind, list):
            out.setdefault(name, []).append(value.decode() if kind[0] == 'str' else _pb_message(value, kind[0]))
        elif isinstance(kind, dict):
            out[name] = _pb_message(value, kind)
        elif kind != 'str' or value:  # proto2 sends unset strings as ""
            out[name] = value.decode() if kind == 'str' else bool(value) if kind == 'bool' else value
    return out


def decode_protobuf(body: bytes) -> dict:
    if not body.startswith(b'k8s\x00'):
        raise api_error(415, 'UnsupportedMediaType', 'not a Kubernetes protobuf envelope')
    envelope = dict(_pb_fields(body[4:]))  # runtime.Unknown{typeMeta=1, raw=2}
    type_meta = {k: v.decode() for k, v in _pb_fields(envelope.get(1, b''))}
    api_version, kind = type_meta.get(1, ''), type_meta.get(2, '')
    if kind not in PB_KINDS:
        raise api_error(415, 'UnsupportedMediaType', f'the stand-in cannot decode protobuf {kind}; send JSON')
    return {'apiVersion': api_version, 'kind': kind, **_pb_message(envelope.get(2, b''), PB_KINDS[kind])}


# --- selectors and JSONPath -------------------------------------------------------------------------

def label_matcher(selector: str):
    """Parse a label selector (a=b, a==b, a!=b, a, !a, a in (x,y), a notin (x,y)) into a predicate."""
    checks = []
    for term in re.split(r',(?![^()]*\))', selector or ''):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r'(\S+)\s+(in|notin)\s+\((.*)\)', term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(',')}
            checks.append(lambda l, k=key, o=op, vs=values: (l.get(k) in vs) == (o == 'in')
                          if k in l else o == 'notin')
        elif m := re.fullmatch(r'([^!=\s]+)\s*(==|=|!=)\s*(\S*)', term):
            key, op, value = m[1], m[2], m[3]
            checks.append(lambda l, k=key, o=op, v=value: (l.get(k) == v) == (o != '!='))
        elif term.startswith('!'):
            checks.append(lambda l, k=term[1:].strip(): k not in l)
        else:
            checks.append(lambda l, k=term: k in l)
    return lambda obj: all(check(dig(obj, ['metadata', 'labels']) or {}) for check in checks)


def field_matcher(selector: str):
    """Parse a field selector (metadata.name=x, metadata.namespace!=y, any dotted path) into a predicate."""
    checks = []
    for term in filter(None, (selector or '').split(',')):
        m = re.fullmatch(r'\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*', term)
        if not m:
            raise api_error(400, 'BadRequest', f'invalid field selector: {term!r}')
        checks.append((m[1].split('.'), m[2] != '!=', m[3]))
    return lambda obj: all((str(dig(obj, p) if dig(obj, p) is not None else '') == v) == eq
                           for p, eq, v in checks)


def jsonpath(obj: Any, path: str) -> list:
    """A small JSONPath for printer columns: .a.b, [0], [*], [?(@.x.y=="v")] and !=."""
    results = [obj]
    for token in re.findall(r'\[\?\(.*?\)\]|\[[^\]]*\]|\.[^.\[]+', path.strip().strip('{}')):
        nxt = []
        for cur in results:
            if token.startswith('[?('):
                m = re.fullmatch(r'\[\?\(@\.([\w.]+)\s*(==|!=)\s*["\']?(.*?)["\']?\)\]', token)
                if m and isinstance(cur, list):
                    nxt += [i for i in cur if (str(dig(i, m[1].split('.'))) == m[3]) == (m[2] == '==')]
            elif token in ('[*]', '[]'):
                nxt += cur if isinstance(cur, list) else list(cur.values()) if isinstance(cur, dict) else []
            elif token.startswith('['):
                if isinstance(cur, list) and -len(cur) <= int(token[1:-1]) < len(cur):
                    nxt.append(cur[int(token[1:-1])])
            elif isinstance(cur, dict) and token[1:] in cur:
                nxt.append(cur[token[1:]])
        results = nxt
    return results


def human_age(timestamp: str) -> str:
    """The `kubectl get` style age (as apimachinery's duration.HumanDuration)."""
    try:
        then = datetime.datetime.strptime(timestamp, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.UTC)
    except (TypeError, ValueError):
        return '<unknown>'
    s = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    if s < 120:
        return f'{s}s'
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f'{m}m{s % 60}s' if s % 60 else f'{m}m'
    if h < 3:
        return f'{m}m'
    if h < 8:
        return f'{h}h{m % 60}m' if m % 60 else f'{h}h'
    if h < 48:
        return f'{h}h'
    if d < 8:
        return f'{d}d{h % 24}h' if h % 24 else f'{d}d'
    return f'{d}d'


# --- the server ---------------------------------------------------------------------------------------

@attrs.define(kw_only=True)
class StandIn(kmock.KubernetesEmulator):
    """
    kmock's emulator with a proper object store. Kubernetes API paths are served here; anything else
    falls through to kmock's DSL/fallbacks (so ``standin['get /x'] << ...`` reactions still work).
    """
    registry: dict = attrs.field(factory=dict, init=False)   # (group, version, plural) -> Res
    objs: dict = attrs.field(factory=dict, init=False)       # (group, plural, namespace, name) -> object
    owners: dict = attrs.field(factory=dict, init=False)     # object key -> {field path: manager}
    crd_keys: dict = attrs.field(factory=dict, init=False)   # CRD name -> registry keys it added
    rv: int = attrs.field(default=1, init=False)             # the global resourceVersion
    log: list = attrs.field(factory=list, init=False)        # (rv, store, type, object, previous)
    log_rvs: list = attrs.field(factory=list, init=False)
    wakeup: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    stopping: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for res in BUILTINS:
            self.registry[res.group, res.version, res.plural] = res
        for ns in ('default', 'kube-system', 'kube-public'):
            self._commit(self.registry['', 'v1', 'namespaces'], None, {'metadata': {'name': ns}})

    def _view(self, res: Res, obj: dict) -> dict:
        """An object as `res` presents it: core/v1 and events.k8s.io/v1 Events are one store."""
        if obj is None or res.store != EVENTS_STORE or obj.get('apiVersion') == res.api_version:
            return obj
        mapping = EVENT_FIELDS if res.group else {v: k for k, v in EVENT_FIELDS.items()}
        return {mapping.get(k, k): v for k, v in obj.items()} | {'apiVersion': res.api_version}

    # ---- event log ----
    def _record(self, kind: str, store: tuple, obj: dict, prev: dict | None) -> None:
        # Stored objects are never mutated in place (every write stores a new dict), so the log
        # can share them with the store.
        self.log.append((self.rv, store, kind, obj, prev))
        self.log_rvs.append(self.rv)
        if len(self.log) > 2 * LOG_LIMIT:
            del self.log[:LOG_LIMIT], self.log_rvs[:LOG_LIMIT]
        self.wakeup.set()
        self.wakeup = asyncio.Event()

    def shutdown(self) -> None:
        self.stopping = True
        self.wakeup.set()

    # ---- writes ----
    def _commit(self, res: Res, old: dict | None, cand: dict, *, sub: str | None = None,
                manager: str = 'unknown', applied: dict | None = None, dry: bool = False,
                force: bool = False) -> dict:
        """Store `cand` over `old` (None = create): keep system fields, detect no-ops, stamp, log."""
        cand = copy.deepcopy(cand)
        if old is not None and res.has_status:  # the status subresource splits status from the rest
            if sub == 'status':
                cand = dict(copy.deepcopy(old), status=cand.get('status'))
            else:
                cand['status'] = copy.deepcopy(old.get('status'))
            if cand['status'] is None:
                del cand['status']
        meta = cand.setdefault('metadata', {})
        meta.pop('managedFields', None)
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            meta.pop('deletionTimestamp', None)
            if res.has_status:
                cand.pop('status', None)
        else:
            for field in ('uid', 'creationTimestamp', 'deletionTimestamp', 'generation', 'name', 'namespace'):
                if field in old['metadata']:
                    meta[field] = old['metadata'][field]
                else:
                    meta.pop(field, None)
        cand['apiVersion'], cand['kind'] = cand.get('apiVersion') or res.api_version, res.kind
        key = (*res.store, meta.get('namespace'), meta['name'])
        owners = self._ownership(res, key, old, cand, manager, applied, sub, force)
        self._defaults(res, cand)
        if not dry:
            self.owners[key] = owners
        if old is not None:
            def strip(o):
                return {**o, 'metadata': {k: v for k, v in o['metadata'].items() if k != 'resourceVersion'}}
            if strip(cand) == strip(old):
                return old  # a no-op: no event, the resourceVersion stays
            if {k: v for k, v in cand.items() if k not in ('metadata', 'status')} != \
               {k: v for k, v in old.items() if k not in ('metadata', 'status')}:
                meta['generation'] = old['metadata'].get('generation', 1) + 1
        if dry:
            return cand
        self.rv += 1
        meta['resourceVersion'] = str(self.rv)
        self.objs[key] = cand
        self._record('MODIFIED' if old else 'ADDED', res.store, cand, old)
        if res.store == CRD_STORE:
            self._register_crd(cand)
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            return self._remove(key)
        return cand

    def _ownership(self, res, key, old, cand, manager, applied, sub, force) -> dict:
        """
        Minimal SSA field ownership, kept aside (never exposed as managedFields; lists are atomic):
        an apply without force conflicts with another manager's differing value, and removes the
        fields this manager applied before but omits now; other writes take over what they change.
        Returns {field path: (manager, by_apply)} for the new object; may drop fields from `cand`.
        """
        owners = dict(self.owners.get(key, {}))

        def scoped(path):  # the main resource and /status manage their fields separately
            return not res.has_status or (path[:1] == ('status',)) == (sub == 'status')
        if applied is not None:
            body = {k: v for k, v in applied.items() if k not in ('apiVersion', 'kind')}
            mine = {p: v for p, v in leaves(body) if scoped(p) and p[:2] not in (
                ('metadata', 'name'), ('metadata', 'namespace'), ('metadata', 'resourceVersion'))}
            conflicts = [p for p, v in mine.items() if owners.get(p, (manager,))[0] != manager and dig(old, p) != v]
            if conflicts and not force:
                fields = ', '.join('.' + '.'.join(p) for p in conflicts)
                raise api_error(409, 'Conflict', f'Apply failed with {len(conflicts)} conflict(s): '
                                f'conflict with "{owners[conflicts[0]][0]}": {fields}')
            for path, (who, by_apply) in list(owners.items()):
                if who == manager and by_apply and scoped(path) and \
                        not any(path[:len(q)] == q or q[:len(path)] == path for q in mine):
                    parents = [cand] + [dig(cand, path[:i]) for i in range(1, len(path))]
                    if isinstance(parents[-1], dict):
                        parents[-1].pop(path[-1], None)
                        for parent, name in reversed(list(zip(parents[:-1], path[:-1]))):
                            if parent.get(name) == {}:  # and the maps this left empty
                                del parent[name]
            owners.update({p: (manager, True) for p in mine})
        for path, value in leaves(cand):
            if scoped(path) and (path[0] != 'metadata' or path[1] in ('labels', 'annotations', 'finalizers')):
                if path not in owners or (applied is None and dig(old, path) != value):
                    owners[path] = (manager, False)
        return {p: o for p, o in owners.items() if dig(cand, p) is not None}

    def _defaults(self, res: Res, obj: dict) -> None:
        """What the built-in controllers would write immediately: namespace phase, CRD conditions."""
        if res.store == ('', 'secrets'):  # stringData is write-only: folded into data
            obj['type'] = obj.get('type') or 'Opaque'
            for k, v in (obj.pop('stringData', None) or {}).items():
                obj.setdefault('data', {})[k] = base64.b64encode(str(v).encode()).decode()
        elif res.store == NS_STORE:
            obj['status'] = {'phase': 'Terminating' if obj['metadata'].get('deletionTimestamp') else 'Active'}
        elif res.store == CRD_STORE:
            names = obj.get('spec', {}).get('names', {})
            since = obj['metadata']['creationTimestamp']
            obj['status'] = {
                'acceptedNames': {k: v for k, v in {
                    'plural': names.get('plural'), 'singular': names.get('singular'), 'kind': names.get('kind'),
                    'listKind': names.get('listKind') or f"{names.get('kind')}List",
                    'shortNames': names.get('shortNames'), 'categories': names.get('categories')}.items() if v},
                'conditions': [
                    {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
                     'message': 'no conflicts found', 'lastTransitionTime': since},
                    {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                     'message': 'the initial names have been accepted', 'lastTransitionTime': since}],
                'storedVersions': [v['name'] for v in obj.get('spec', {}).get('versions', []) if v.get('storage')],
            }

    def _delete(self, key: tuple) -> dict:
        """Delete now, or (with finalizers) mark with a deletionTimestamp and wait for them to go."""
        obj = self.objs[key]
        if not obj['metadata'].get('finalizers'):
            return self._remove(key)
        if obj['metadata'].get('deletionTimestamp'):
            return obj
        new = copy.deepcopy(obj)
        new['metadata']['deletionTimestamp'] = now()
        new['metadata']['deletionGracePeriodSeconds'] = 0
        self.rv += 1
        new['metadata']['resourceVersion'] = str(self.rv)
        self.objs[key] = new
        self._record('MODIFIED', key[:2], new, obj)
        return new

    def _remove(self, key: tuple) -> dict:
        obj = copy.deepcopy(self.objs.pop(key))
        self.owners.pop(key, None)
        self.rv += 1
        obj['metadata']['resourceVersion'] = str(self.rv)
        self._record('DELETED', key[:2], obj, obj)
        if key[:2] == CRD_STORE:  # the custom resources go with their definition
            for rkey in self.crd_keys.pop(key[3], []):
                res = self.registry.pop(rkey, None)
                for okey in [k for k in self.objs if res and k[:2] == res.store]:
                    self._remove(okey)
        elif key[:2] == NS_STORE:  # and everything in a deleted namespace
            for okey in [k for k in self.objs if k[2] == key[3]]:
                if okey in self.objs:
                    self._delete(okey)
        return obj

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get('spec', {})
        names = spec.get('names', {})
        for rkey in self.crd_keys.pop(crd['metadata']['name'], []):
            self.registry.pop(rkey, None)
        keys = []
        for version in spec.get('versions', []):
            if version.get('served', True):
                res = Res(spec['group'], version['name'], names['plural'], names['kind'],
                          spec.get('scope', 'Namespaced') == 'Namespaced', names.get('shortNames', []),
                          list(version.get('subresources', {})), names.get('categories', []),
                          version.get('additionalPrinterColumns', []), names.get('singular', ''))
                keys.append((res.group, res.version, res.plural))
                self.registry[keys[-1]] = res
        self.crd_keys[crd['metadata']['name']] = keys

    async def gc_loop(self) -> None:
        """Background garbage collection: delete objects all of whose owners are gone."""
        while True:
            await asyncio.sleep(GC_INTERVAL)
            uids = {o['metadata']['uid'] for o in self.objs.values()}
            for key, obj in list(self.objs.items()):
                refs = obj['metadata'].get('ownerReferences') or []
                if key in self.objs and refs and not any(r.get('uid') in uids for r in refs):
                    self._delete(key)
            if len(self._requests) > 1000:  # kmock records requests; keep memory flat
                del self._requests[:]

    # ---- HTTP ----
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            response = await self._serve(raw)
        except kmock.KubernetesError as e:
            return await self._render_error(e)
        except Exception as e:
            traceback.print_exc()
            return await self._render_error(e)
        return response if response is not None else await super().__call__(raw)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            exc = api_error(500, 'InternalError', repr(exc))
        return aiohttp.web.json_response({
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': exc.message, 'reason': exc.reason, 'details': exc.details or {}, 'code': exc.status,
        }, status=exc.status)

    async def _serve(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        parts = [p for p in raw.path.split('/') if p]
        q = raw.query
        json_ok = aiohttp.web.json_response
        if raw.method != 'GET' and (len(parts) < 3 or parts[0] not in ('api', 'apis')):
            return None
        if not parts:
            return json_ok({'paths': sorted({'/api', '/api/v1', '/apis', '/version', '/openapi/v3'} |
                                            {f'/apis/{g}/{v}' for g, v, _ in self.registry if g})})
        if parts == ['version']:
            return json_ok({'major': '1', 'minor': '34', 'gitVersion': 'v1.34.0-edgewire-standin',
                            'gitCommit': '0' * 40, 'gitTreeState': 'clean', 'buildDate': '2025-08-27T00:00:00Z',
                            'goVersion': 'go1.24.6', 'compiler': 'gc', 'platform': 'linux/amd64'})
        if parts[0] == 'openapi':
            return self._openapi(parts[2:]) if parts[:2] == ['openapi', 'v3'] else None
        if parts == ['api']:
            return json_ok({'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{raw.host}'}]})
        if parts == ['apis']:
            return json_ok({'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': self._groups()})
        if parts[0] == 'apis' and len(parts) == 2:
            group = [g for g in self._groups() if g['name'] == parts[1]]
            if not group:
                raise api_error(404, 'NotFound', 'the server could not find the requested resource')
            return json_ok({'kind': 'APIGroup', 'apiVersion': 'v1', **group[0]})
        if parts[0] not in ('api', 'apis'):
            return None
        group, version, rest = ('', parts[1], parts[2:]) if parts[0] == 'api' else (parts[1], parts[2], parts[3:])
        if not rest:
            return self._resource_list(group, version)
        namespace = None
        if len(rest) >= 3 and rest[0] == 'namespaces' and rest[2] not in ('status', 'finalize'):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = (rest + [None, None])[:3]
        res = self.registry.get((group, version, plural))
        if res is None or len(rest) > 3 or (sub and sub not in res.subresources):
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        namespace = namespace if res.namespaced else None
        body = await raw.read()
        data = None
        if body and 'protobuf' in raw.content_type:
            data = decode_protobuf(body) if raw.method != 'DELETE' else None
        elif body:
            try:
                data = json.loads(body)
            except ValueError:
                data = yaml.safe_load(body)
        table = 'as=Table' in raw.headers.get('Accept', '')

        if raw.method == 'GET' and q.get('watch') in ('true', '1'):
            return await self._watch(raw, res, namespace, name, table)
        if raw.method == 'GET' and name is None:
            items = [self._view(res, o) for o in self._select(res, namespace, q)]
            return json_ok(self._table(res, items) if table else {
                'kind': f'{res.kind}List', 'apiVersion': res.api_version,
                'metadata': {'resourceVersion': str(self.rv)}, 'items': items})
        if raw.method == 'POST' and name is None:
            return json_ok(self._view(res, self._create(res, namespace, data, q)), status=201)
        if raw.method == 'DELETE' and name is None:
            keys = [self._key(res, o) for o in self._select(res, namespace, q)]
            deleted = [self._view(res, self._delete(k)) for k in keys if k in self.objs]
            return json_ok({'kind': f'{res.kind}List', 'apiVersion': res.api_version,
                            'metadata': {'resourceVersion': str(self.rv)}, 'items': deleted})
        if name is None:
            raise api_error(405, 'MethodNotAllowed', f'{raw.method} is not supported on collections')

        key = (*res.store, namespace, name)
        old = self.objs.get(key)
        what = f'{res.plural}.{res.group}' if res.group else res.plural
        if old is None and (sub or not (raw.method == 'PATCH' and raw.content_type == 'application/apply-patch+yaml')):
            raise api_error(404, 'NotFound', f'{what} "{name}" not found',
                            name=name, group=res.group, kind=res.plural)
        if raw.method == 'GET':
            return json_ok(self._table(res, [self._view(res, old)]) if table else self._view(res, old))
        if raw.method == 'DELETE':
            if res.store == NS_STORE and name in ('default', 'kube-system', 'kube-public'):
                raise api_error(403, 'Forbidden', f'namespace "{name}" is forbidden: this namespace may not be deleted')
            pre = (data or {}).get('preconditions') or {}
            for field in ('uid', 'resourceVersion'):
                if pre.get(field) and pre[field] != old['metadata'].get(field):
                    raise api_error(409, 'Conflict', f'Precondition failed: {field} in precondition: '
                                    f'{pre[field]}, {field} in object meta: {old["metadata"].get(field)}')
            return json_ok(self._view(res, self._delete(key) if q.get('dryRun') != 'All' else old))
        if not isinstance(data, dict) and not (raw.method == 'PATCH' and isinstance(data, list)):
            raise api_error(400, 'BadRequest', 'the request body is not an object')
        manager = q.get('fieldManager') or raw.headers.get('User-Agent', 'unknown').split('/')[0]
        dry, applied = q.get('dryRun') == 'All', None
        if raw.method == 'PUT':
            cand = data
        elif raw.method == 'PATCH':
            patch_type = raw.content_type
            base = self._view(res, old) or {'apiVersion': res.api_version, 'kind': res.kind,
                           'metadata': {'name': name, 'namespace': namespace}}
            if patch_type == 'application/apply-patch+yaml':
                applied = data
                cand = merge_patch(base, data)  # SSA approximated: maps merge, lists are replaced
            elif patch_type == 'application/merge-patch+json':
                cand = merge_patch(base, data)
            elif patch_type == 'application/strategic-merge-patch+json':
                cand = strategic_merge(base, data)
            elif patch_type == 'application/json-patch+json':
                try:
                    cand = jsonpatch.apply_patch(base, data)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise api_error(422, 'Invalid', f'the JSON patch failed: {e}')
            else:
                raise api_error(415, 'UnsupportedMediaType', f'the patch type {patch_type!r} is not supported')
            if old is None:  # server-side apply creates
                cand.setdefault('metadata', {}).update(name=name, namespace=namespace)
                return json_ok(self._view(res, self._create(res, namespace, cand, q, applied=applied)), status=201)
        else:
            raise api_error(405, 'MethodNotAllowed', f'{raw.method} is not supported')
        sent_rv = dig(data, ['metadata', 'resourceVersion']) if isinstance(data, dict) else None
        if sent_rv and sent_rv != old['metadata']['resourceVersion']:
            raise api_error(409, 'Conflict', f'Operation cannot be fulfilled on {what} "{name}": the object has '
                            'been modified; please apply your changes to the latest version and try again',
                            name=name, group=res.group, kind=res.plural)
        cand = dict(cand, metadata=dict(cand.get('metadata') or {}, name=name, namespace=namespace))
        force = q.get('force') in ('true', '1')
        return json_ok(self._view(res, self._commit(res, old, cand, sub=sub, manager=manager, applied=applied,
                                                    dry=dry, force=force)))

    def _create(self, res: Res, namespace: str | None, data: Any, q, applied: dict | None = None) -> dict:
        if not isinstance(data, dict):
            raise api_error(400, 'BadRequest', 'the request body is not an object')
        meta = data.setdefault('metadata', {})
        if not meta.get('name') and meta.get('generateName'):
            meta['name'] = meta['generateName'] + ''.join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if not meta.get('name'):
            raise api_error(422, 'Invalid', f'{res.kind} is invalid: metadata.name: Required value')
        if res.namespaced:
            meta['namespace'] = namespace or meta.get('namespace') or 'default'
        else:
            meta.pop('namespace', None)
        key = (*res.store, meta.get('namespace'), meta['name'])
        if key in self.objs:
            what = f'{res.plural}.{res.group}' if res.group else res.plural
            raise api_error(409, 'AlreadyExists', f'{what} "{meta["name"]}" already exists',
                            name=meta['name'], group=res.group, kind=res.plural)
        manager = q.get('fieldManager') or 'unknown'
        return self._commit(res, None, data, manager=manager, applied=applied, dry=q.get('dryRun') == 'All')

    def _key(self, res: Res, obj: dict) -> tuple:
        return (*res.store, obj['metadata'].get('namespace'), obj['metadata']['name'])

    def _select(self, res: Res, namespace: str | None, q) -> list[dict]:
        labels, fields = label_matcher(q.get('labelSelector', '')), field_matcher(q.get('fieldSelector', ''))
        objs = [self._view(res, o) for k, o in sorted(self.objs.items(), key=lambda kv: (kv[0][2] or '', kv[0][3]))
                if k[:2] == res.store and (namespace is None or k[2] == namespace)]
        return [o for o in objs if labels(o) and fields(o)]

    async def _watch(self, raw, res: Res, namespace, name, table: bool) -> aiohttp.web.StreamResponse:
        q = raw.query
        labels, fields = label_matcher(q.get('labelSelector', '')), field_matcher(q.get('fieldSelector', ''))

        def matches(obj):
            meta = obj['metadata']
            return ((namespace is None or meta.get('namespace') == namespace) and (name is None or meta['name'] == name)
                    and labels(obj) and fields(obj))

        response = aiohttp.web.StreamResponse(headers={'Content-Type': 'application/json'})
        await response.prepare(raw)

        async def send(kind, obj):
            payload = self._table(res, [obj]) if table and kind != 'BOOKMARK' else obj
            await response.write(json.dumps({'type': kind, 'object': payload}).encode() + b'\n')

        def bookmark(rv, initial_end=False):
            meta = {'resourceVersion': str(rv)}
            if initial_end:
                meta['annotations'] = {'k8s.io/initial-events-end': 'true'}
            return {'kind': res.kind, 'apiVersion': res.api_version, 'metadata': meta}

        gone = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure', 'reason': 'Expired',
                'code': 410, 'message': f'too old resource version: {q.get("resourceVersion")} ({self.rv})'}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(q.get('timeoutSeconds') or 1800)
        bookmarks = q.get('allowWatchBookmarks') in ('true', '1')
        since = q.get('resourceVersion', '')
        try:
            if since in ('', '0') or q.get('sendInitialEvents') == 'true':
                cursor = self.rv  # start with the current state as synthetic ADDED events
                for obj in [o for o in self._select(res, namespace, {}) if matches(o)]:
                    await send('ADDED', obj)
                if q.get('sendInitialEvents') == 'true':
                    await send('BOOKMARK', bookmark(cursor, initial_end=True))
            else:
                cursor = int(since) if since.isdigit() else -1
                if cursor < 0 or cursor > self.rv:
                    await send('ERROR', gone)
                    return response
            while not self.stopping and loop.time() < deadline and raw.transport and not raw.transport.is_closing():
                if self.log_rvs and cursor < self.log_rvs[0] - 1:  # fell behind the trimmed log
                    await send('ERROR', gone)
                    break
                for rv, store, kind, obj, prev in self.log[bisect.bisect_right(self.log_rvs, cursor):]:
                    cursor = rv
                    if store != res.store:
                        continue
                    obj, prev = self._view(res, obj), self._view(res, prev)
                    now_in, was_in = matches(obj), prev is not None and matches(prev)
                    if kind == 'MODIFIED' and now_in != was_in:
                        kind = 'ADDED' if now_in else 'DELETED'
                    if now_in or kind == 'DELETED' and was_in:
                        await send(kind, obj)
                wakeup = self.wakeup
                if self.log_rvs and self.log_rvs[-1] > cursor:
                    continue  # more events arrived while sending
                try:
                    await asyncio.wait_for(wakeup.wait(), min(BOOKMARK_INTERVAL, max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    if bookmarks:
                        await send('BOOKMARK', bookmark(cursor))
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    def _table(self, res: Res, objs: list[dict]) -> dict:
        """A meta.k8s.io/v1 Table as the API server renders for `kubectl get` (CRD printer columns)."""
        printer = res.columns or [{'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp'}]
        defs = [{'name': 'Name', 'type': 'string', 'format': 'name', 'priority': 0,
                 'description': 'Name must be unique within a namespace.'}]
        defs += [{'name': c['name'], 'type': c.get('type', 'string'), 'format': c.get('format', ''),
                  'description': c.get('description', ''), 'priority': c.get('priority', 0)} for c in printer]
        rows = []
        for obj in objs:
            cells = [obj['metadata']['name']]
            for col in printer:
                found = jsonpath(obj, col['jsonPath'])
                value = found[0] if found else None
                if value is not None and col.get('type') == 'date':
                    value = human_age(value)
                elif value is not None and col.get('type', 'string') == 'string' and not isinstance(value, str):
                    value = json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() \
                        if isinstance(value, bool) else str(value)
                cells.append(value)
            rows.append({'cells': cells, 'object': obj})
        return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': str(self.rv)},
                'columnDefinitions': defs, 'rows': rows}

    # ---- discovery ----
    def _groups(self) -> list[dict]:
        groups: dict[str, list[str]] = {}
        for g, v, _ in self.registry:
            if g and v not in groups.setdefault(g, []):
                groups[g].append(v)
        return [{'name': g, 'versions': [{'groupVersion': f'{g}/{v}', 'version': v} for v in vs],
                 'preferredVersion': {'groupVersion': f'{g}/{vs[0]}', 'version': vs[0]}}
                for g, vs in sorted(groups.items())]

    def _resource_list(self, group: str, version: str) -> aiohttp.web.Response:
        served = [r for (g, v, _), r in sorted(self.registry.items()) if (g, v) == (group, version)]
        if not served:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        resources = []
        for r in served:
            resources.append({'name': r.plural, 'singularName': r.singular or r.kind.lower(), 'namespaced': r.namespaced,
                              'kind': r.kind, 'verbs': VERBS, 'shortNames': r.short_names, 'categories': r.categories})
            resources += [{'name': f'{r.plural}/{s}', 'singularName': '', 'namespaced': r.namespaced,
                           'kind': 'Scale' if s == 'scale' else r.kind, 'verbs': ['get', 'patch', 'update']}
                          for s in r.subresources]
        return aiohttp.web.json_response({'kind': 'APIResourceList', 'apiVersion': 'v1',
                                          'groupVersion': f'{group}/{version}' if group else version,
                                          'resources': resources})

    def _openapi(self, rest: list[str]) -> aiohttp.web.Response:
        """
        Minimal OpenAPI v3: per group-version, a PATCH operation per kind that declares the
        `fieldValidation` parameter, so kubectl delegates validation to the server (which accepts
        everything) instead of validating client-side against schemas we do not have.
        """
        gvs = sorted({(g, v) for g, v, _ in self.registry})
        if not rest:
            return aiohttp.web.json_response({'paths': {
                (f'apis/{g}/{v}' if g else f'api/{v}'): {'serverRelativeURL': f'/openapi/v3/{"apis/" + g if g else "api"}/'
                                                         f'{v}?hash={self.rv}'} for g, v in gvs}})
        group, version = ('', rest[1]) if rest[0] == 'api' else (rest[1], rest[2])
        paths = {}
        for (g, v, _), r in self.registry.items():
            if (g, v) == (group, version):
                prefix = f'/apis/{g}/{v}' if g else f'/api/{v}'
                ns = '/namespaces/{namespace}' if r.namespaced else ''
                paths[f'{prefix}{ns}/{r.plural}/{{name}}'] = {'patch': {
                    'x-kubernetes-group-version-kind': {'group': g, 'version': v, 'kind': r.kind},
                    'parameters': [{'name': n, 'in': 'query', 'schema': {'type': 'string'}}
                                   for n in ('dryRun', 'fieldManager', 'fieldValidation', 'force')],
                    'responses': {'200': {'description': 'OK'}}}}
        return aiohttp.web.json_response({'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': 'v1.34.0'},
                                          'paths': paths, 'components': {'schemas': {}}})


def write_kubeconfig(path: str, url: str) -> None:
    config = {
        'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
        'clusters': [{'name': 'standin', 'cluster': {'server': url}}],
        'users': [{'name': 'standin', 'user': {'token': 'standin-token'}}],
        'contexts': [{'name': 'standin', 'context': {'cluster': 'standin', 'user': 'standin', 'namespace': 'default'}}],
        'current-context': 'standin',
    }
    with open(path, 'w') as f:
        yaml.safe_dump(config, f)


async def serve(port: int, kubeconfig: str | None) -> None:
    standin = StandIn()
    async with standin, kmock.Server(standin, port=port or None) as server:
        url = f'http://127.0.0.1:{server.port}'
        if kubeconfig:
            write_kubeconfig(kubeconfig, url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        gc = asyncio.create_task(standin.gc_loop())
        print(f'READY {url}', flush=True)
        await stop.wait()
        standin.shutdown()  # ends the open watch streams
        gc.cancel()
        await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description='In-memory Kubernetes API stand-in (kmock-based).')
    parser.add_argument('--port', type=int, default=0, help='TCP port on 127.0.0.1 (0 = pick a free one)')
    parser.add_argument('--kubeconfig', help='where to write a kubeconfig pointing at the stand-in')
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.kubeconfig))


if __name__ == '__main__':
    sys.exit(main())
