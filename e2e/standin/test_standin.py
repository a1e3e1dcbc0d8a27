"""
Drives the stand-in with the real kubectl (and raw HTTP where kubectl hides the detail).

    python3 -m pytest e2e/standin/test_standin.py -q

kubectl is taken from $KUBECTL, else /root/.cache/edgewire/bin/kubectl, else PATH.
"""
import http.client as httpclient
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

HERE = pathlib.Path(__file__).parent
KUBECTL = os.environ.get('KUBECTL') or (
    '/root/.cache/edgewire/bin/kubectl' if os.path.exists('/root/.cache/edgewire/bin/kubectl') else shutil.which('kubectl'))

CRD = textwrap.dedent('''
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.test.edgewire.dev
    spec:
      group: test.edgewire.dev
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [edgewire]}
      versions:
      - name: v1alpha1
        served: true
        storage: true
        subresources: {status: {}}
        schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
        additionalPrinterColumns:
        - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
        - {name: Adapter, type: string, jsonPath: .spec.adapter}
        - {name: Endpoint, type: string, jsonPath: .status.endpoint}
        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
''')
WIDGETS = '/apis/test.edgewire.dev/v1alpha1'


@pytest.fixture(scope='session')
def standin(tmp_path_factory):
    if not KUBECTL:
        pytest.fail('kubectl not found: set $KUBECTL')
    tmp = tmp_path_factory.mktemp('standin')
    kubeconfig = tmp / 'kubeconfig.yaml'
    proc = subprocess.Popen([sys.executable, str(HERE / 'standin.py'), '--port', '0', '--kubeconfig', str(kubeconfig)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith('READY http://127.0.0.1:'), line
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), KUBECACHEDIR=str(tmp / 'cache'))
    yield {'url': line.split()[1], 'env': env, 'proc': proc}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0  # clean exit on SIGTERM


def kubectl(standin, *args, input=None, check=True):
    result = subprocess.run([KUBECTL, *args], env=standin['env'], input=input, capture_output=True, text=True,
                            timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f'kubectl {" ".join(args)} failed: {result.stderr}')
    return result if not check else result.stdout


def kjson(standin, *args):
    return json.loads(kubectl(standin, *args, '-o', 'json'))


def http(standin, method, path, body=None, content_type='application/json'):
    """Raw HTTP; returns (status code, decoded JSON body)."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(standin['url'] + path, data=data, method=method,
                                 headers={'Content-Type': content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def watch(standin, path, seconds):
    """Read newline-delimited watch events for up to `seconds` (or until the server ends the stream)."""
    url = urllib.parse.urlsplit(standin['url'])
    conn = httpclient.HTTPConnection(url.hostname, url.port, timeout=seconds + 5)
    conn.request('GET', path)
    resp = conn.getresponse()
    assert resp.status == 200
    events, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = resp.readline()
        if not line:
            break
        events.append(json.loads(line))
    conn.close()
    return events


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def ns(standin, request):
    name = request.node.name.replace('_', '-').lower()[:50]
    kubectl(standin, 'create', 'namespace', name)
    return name


@pytest.fixture(scope='session')
def crd(standin):
    kubectl(standin, 'apply', '-f', '-', input=CRD)
    kubectl(standin, 'wait', '--for=condition=Established', 'crd/widgets.test.edgewire.dev', '--timeout=10s')
    return 'widgets.test.edgewire.dev'


def widget(standin, ns, name, adapter='nats', **meta):
    doc = {'apiVersion': 'test.edgewire.dev/v1alpha1', 'kind': 'Widget',
           'metadata': {'name': name, 'namespace': ns, **meta}, 'spec': {'adapter': adapter}}
    kubectl(standin, 'apply', '-f', '-', input=json.dumps(doc))
    return kjson(standin, '-n', ns, 'get', 'widget', name)


def test_discovery(standin):
    out = kubectl(standin, 'api-resources')
    for row in (['secrets', 'v1', 'true', 'Secret'], ['services', 'svc', 'v1', 'true', 'Service'],
                ['namespaces', 'ns', 'v1', 'false', 'Namespace'], ['leases', 'coordination.k8s.io/v1', 'true', 'Lease'],
                ['deployments', 'deploy', 'apps/v1', 'true', 'Deployment']):
        assert any(line.split() == row for line in out.splitlines()), row
    assert http(standin, 'GET', '/api/v1')[1]['groupVersion'] == 'v1'
    assert 'Server Version: v1.34' in kubectl(standin, 'version')
    assert {'default', 'kube-system'} <= {n['metadata']['name'] for n in kjson(standin, 'get', 'ns')['items']}


def test_namespace_and_secret(standin, ns):
    kubectl(standin, '-n', ns, 'create', 'secret', 'generic', 'creds', '--from-literal=user=admin')
    secret = kjson(standin, '-n', ns, 'get', 'secret', 'creds')
    assert secret['data'] == {'user': 'YWRtaW4='} and secret['type'] == 'Opaque'
    meta = secret['metadata']
    assert meta['uid'] and int(meta['resourceVersion']) > 0 and meta['creationTimestamp'].endswith('Z')
    dup = kubectl(standin, '-n', ns, 'create', 'secret', 'generic', 'creds', check=False)
    assert dup.returncode != 0 and 'secrets "creds" already exists' in dup.stderr
    code, body = http(standin, 'POST', f'/api/v1/namespaces/{ns}/secrets', {'metadata': {'name': 'creds'}})
    assert (code, body['reason']) == (409, 'AlreadyExists')


def test_404_is_a_notfound_status(standin):
    code, body = http(standin, 'GET', '/api/v1/namespaces/default/configmaps/missing')
    assert code == 404
    assert body['kind'] == 'Status' and body['reason'] == 'NotFound' and body['code'] == 404
    assert 'NotFound' in kubectl(standin, 'get', 'cm', 'missing', check=False).stderr


def test_crd_printer_columns_and_category(standin, ns, crd):
    widget(standin, ns, 'w1', adapter='kafka')
    kubectl(standin, '-n', ns, 'patch', 'wd', 'w1', '--subresource=status', '--type=merge', '-p',
            json.dumps({'status': {'endpoint': 'kafka://b:9092', 'conditions': [{'type': 'Ready', 'status': 'True'}]}}))
    header, row = kubectl(standin, '-n', ns, 'get', 'wd').splitlines()
    assert header.split() == ['NAME', 'READY', 'ADAPTER', 'ENDPOINT', 'AGE']
    assert row.split()[:4] == ['w1', 'True', 'kafka', 'kafka://b:9092'] and row.split()[4].endswith('s')
    assert 'w1' in kubectl(standin, '-n', ns, 'get', 'edgewire')
    crd_obj = kjson(standin, 'get', 'crd', crd)
    assert crd_obj['status']['acceptedNames']['shortNames'] == ['wd']


def test_generation_and_status_subresource(standin, ns, crd):
    w = widget(standin, ns, 'w2')
    assert w['metadata']['generation'] == 1
    kubectl(standin, '-n', ns, 'patch', 'wd', 'w2', '--type=merge', '-p', '{"spec":{"adapter":"redis"}}')
    assert kjson(standin, '-n', ns, 'get', 'wd', 'w2')['metadata']['generation'] == 2
    kubectl(standin, '-n', ns, 'patch', 'wd', 'w2', '--subresource=status', '--type=merge',
            '-p', '{"status":{"endpoint":"e1"},"spec":{"adapter":"ignored"}}')
    w = kjson(standin, '-n', ns, 'get', 'wd', 'w2')
    assert w['metadata']['generation'] == 2 and w['status'] == {'endpoint': 'e1'} and w['spec']['adapter'] == 'redis'
    # the main resource ignores status changes: a no-op, so the resourceVersion stays
    kubectl(standin, '-n', ns, 'patch', 'wd', 'w2', '--type=merge', '-p', '{"status":{"endpoint":"nope"}}')
    again = kjson(standin, '-n', ns, 'get', 'wd', 'w2')
    assert again['status'] == {'endpoint': 'e1'}
    assert again['metadata']['resourceVersion'] == w['metadata']['resourceVersion']


def test_owner_reference_garbage_collection(standin, ns, crd):
    owner = widget(standin, ns, 'parent')
    ref = {'apiVersion': 'test.edgewire.dev/v1alpha1', 'kind': 'Widget', 'name': 'parent',
           'uid': owner['metadata']['uid'], 'controller': True}
    for name in ('child', 'orphan-to-be'):
        kubectl(standin, '-n', ns, 'create', 'configmap', name, '--from-literal=a=1')
        kubectl(standin, '-n', ns, 'patch', 'cm', name, '--type=merge',
                '-p', json.dumps({'metadata': {'ownerReferences': [ref]}}))
    time.sleep(1.2)  # a GC sweep or two: owned objects with a live owner stay
    assert kubectl(standin, '-n', ns, 'get', 'cm', 'child', check=False).returncode == 0
    kubectl(standin, '-n', ns, 'delete', 'widget', 'parent')
    gone = lambda: 'NotFound' in kubectl(standin, '-n', ns, 'get', 'cm', 'child', check=False).stderr
    assert wait_until(gone), 'the child ConfigMap was not garbage-collected'


def test_finalizers_delay_deletion(standin, ns, crd):
    widget(standin, ns, 'fin', finalizers=['test.edgewire.dev/cleanup'])
    kubectl(standin, '-n', ns, 'delete', 'widget', 'fin', '--wait=false')
    w = kjson(standin, '-n', ns, 'get', 'widget', 'fin')
    assert w['metadata']['deletionTimestamp']
    kubectl(standin, '-n', ns, 'patch', 'widget', 'fin', '--type=json',
            '-p', '[{"op":"remove","path":"/metadata/finalizers"}]')
    assert 'NotFound' in kubectl(standin, '-n', ns, 'get', 'widget', 'fin', check=False).stderr


def test_server_side_apply(standin, ns, crd):
    doc = {'apiVersion': 'test.edgewire.dev/v1alpha1', 'kind': 'Widget', 'metadata': {'name': 'ssa', 'namespace': ns},
           'spec': {'adapter': 'nats', 'replicas': 1}}
    assert 'serverside-applied' in kubectl(standin, 'apply', '--server-side', '-f', '-', input=json.dumps(doc))
    doc['spec'] = {'adapter': 'mqtt'}  # replicas omitted: SSA removes what this manager no longer applies
    kubectl(standin, 'apply', '--server-side', '-f', '-', input=json.dumps(doc))
    w = kjson(standin, '-n', ns, 'get', 'wd', 'ssa')
    assert w['spec'] == {'adapter': 'mqtt'} and w['metadata']['generation'] == 2
    kubectl(standin, 'apply', '--server-side', '-f', '-', input=json.dumps(doc))  # no-op
    assert kjson(standin, '-n', ns, 'get', 'wd', 'ssa')['metadata']['resourceVersion'] == w['metadata']['resourceVersion']
    # another manager's differing value conflicts unless forced
    path = f'{WIDGETS}/namespaces/{ns}/widgets/ssa?fieldManager=other'
    patch = {'apiVersion': 'test.edgewire.dev/v1alpha1', 'kind': 'Widget', 'spec': {'adapter': 'redis'}}
    code, body = http(standin, 'PATCH', path, patch, 'application/apply-patch+yaml')
    assert (code, body['reason']) == (409, 'Conflict')
    code, body = http(standin, 'PATCH', path + '&force=true', patch, 'application/apply-patch+yaml')
    assert code == 200 and body['spec']['adapter'] == 'redis'


def test_server_side_apply_creates_and_patches_status(standin, ns, crd):
    base = f'{WIDGETS}/namespaces/{ns}/widgets/made?fieldManager=edgewire-operator&force=true'
    doc = {'apiVersion': 'test.edgewire.dev/v1alpha1', 'kind': 'Widget', 'metadata': {'name': 'made'},
           'spec': {'adapter': 'nats'}, 'status': {'endpoint': 'dropped-on-create'}}
    code, created = http(standin, 'PATCH', base, doc, 'application/apply-patch+yaml')
    assert code == 201 and 'status' not in created and created['metadata']['uid']
    status = {'apiVersion': 'test.edgewire.dev/v1alpha1', 'kind': 'Widget', 'status': {'endpoint': 'e', 'x': 1}}
    code, patched = http(standin, 'PATCH', base.replace('/made?', '/made/status?'), status, 'application/apply-patch+yaml')
    assert code == 200 and patched['status'] == {'endpoint': 'e', 'x': 1}
    assert patched['metadata']['generation'] == 1


def test_client_side_apply_secret_and_custom_resource(standin, ns, crd):
    secret = {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'csa', 'namespace': ns},
              'stringData': {'token': 'one'}}
    assert 'created' in kubectl(standin, 'apply', '-f', '-', input=json.dumps(secret))
    secret['stringData']['token'] = 'two'
    assert 'configured' in kubectl(standin, 'apply', '-f', '-', input=json.dumps(secret))
    s = kjson(standin, '-n', ns, 'get', 'secret', 'csa')
    assert s['data'] == {'token': 'dHdv'} and 'stringData' not in s
    assert 'kubectl.kubernetes.io/last-applied-configuration' in s['metadata']['annotations']
    widget(standin, ns, 'csa-w', adapter='a')
    w = widget(standin, ns, 'csa-w', adapter='b')
    assert w['spec']['adapter'] == 'b' and w['metadata']['generation'] == 2


def test_watch_resumes_from_resource_version(standin, ns):
    kubectl(standin, '-n', ns, 'create', 'configmap', 'before', '--from-literal=a=1')
    listing = http(standin, 'GET', f'/api/v1/namespaces/{ns}/configmaps')[1]  # kubectl hides the list's RV
    rv = listing['metadata']['resourceVersion']
    assert [i['metadata']['name'] for i in listing['items']] == ['before'] and listing['kind'] == 'ConfigMapList'
    kubectl(standin, '-n', ns, 'create', 'configmap', 'after', '--from-literal=a=1')
    kubectl(standin, '-n', ns, 'label', 'configmap', 'after', 'app=x')
    path = f'/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=6'
    events = watch(standin, path, 8)
    changes = [(e['type'], e['object']['metadata']['name']) for e in events if e['type'] != 'BOOKMARK']
    assert changes == [('ADDED', 'after'), ('MODIFIED', 'after')]
    assert all(int(e['object']['metadata']['resourceVersion']) > int(rv) for e in events)
    assert events[-1]['type'] == 'BOOKMARK'  # idle watches get bookmarks, and the stream ends at timeoutSeconds
    # selectors: only labelled objects, only one name
    sel = watch(standin, f'/api/v1/namespaces/{ns}/configmaps?watch=1&labelSelector=app%20in%20(x,y)&timeoutSeconds=1', 3)
    assert [e['object']['metadata']['name'] for e in sel] == ['after']
    by_name = watch(standin, f'/api/v1/namespaces/{ns}/configmaps?watch=1&fieldSelector=metadata.name%3Dbefore&timeoutSeconds=1', 3)
    assert [e['object']['metadata']['name'] for e in by_name] == ['before']


def test_kubectl_watch_only_sees_new_events(standin, ns):
    proc = subprocess.Popen([KUBECTL, '-n', ns, 'get', 'configmaps', '--watch-only', '-o', 'name'],
                            env=standin['env'], stdout=subprocess.PIPE, text=True)
    try:
        kubectl(standin, '-n', ns, 'create', 'configmap', 'existing', '--from-literal=a=1')
        time.sleep(1.0)
        kubectl(standin, '-n', ns, 'create', 'configmap', 'watched', '--from-literal=a=1')
        time.sleep(1.0)
    finally:
        proc.terminate()
    seen = proc.communicate(timeout=5)[0].split()
    assert 'configmap/watched' in seen


def test_noop_apply_keeps_resource_version(standin, ns):
    cm = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'same', 'namespace': ns}, 'data': {'a': '1'}}
    kubectl(standin, 'apply', '-f', '-', input=json.dumps(cm))
    rv = kjson(standin, '-n', ns, 'get', 'cm', 'same')['metadata']['resourceVersion']
    assert 'unchanged' in kubectl(standin, 'apply', '-f', '-', input=json.dumps(cm))
    kubectl(standin, 'apply', '--server-side', '--force-conflicts', '-f', '-', input=json.dumps(cm))
    assert kjson(standin, '-n', ns, 'get', 'cm', 'same')['metadata']['resourceVersion'] == rv


def test_stale_resource_version_put_conflicts(standin, ns):
    kubectl(standin, '-n', ns, 'create', 'configmap', 'occ', '--from-literal=a=1')
    cm = kjson(standin, '-n', ns, 'get', 'cm', 'occ')
    cm['data'] = {'a': '2'}
    code, fresh = http(standin, 'PUT', f'/api/v1/namespaces/{ns}/configmaps/occ', cm)
    assert code == 200 and fresh['metadata']['resourceVersion'] != cm['metadata']['resourceVersion']
    cm['data'] = {'a': '3'}  # still carries the old resourceVersion
    code, body = http(standin, 'PUT', f'/api/v1/namespaces/{ns}/configmaps/occ', cm)
    assert (code, body['reason']) == (409, 'Conflict')
    assert 'Conflict' in kubectl(standin, 'replace', '-f', '-', input=json.dumps(cm), check=False).stderr


def test_lease_create_and_update(standin, ns):
    lease = {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease', 'metadata': {'name': 'leader'},
             'spec': {'holderIdentity': 'a', 'leaseDurationSeconds': 15}}
    code, created = http(standin, 'POST', f'/apis/coordination.k8s.io/v1/namespaces/{ns}/leases', lease)
    assert code == 201
    assert http(standin, 'POST', f'/apis/coordination.k8s.io/v1/namespaces/{ns}/leases', lease)[1]['reason'] == 'AlreadyExists'
    created['spec']['holderIdentity'] = 'b'
    code, updated = http(standin, 'PUT', f'/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/leader', created)
    assert code == 200 and updated['spec']['holderIdentity'] == 'b'
    code, body = http(standin, 'PUT', f'/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/leader', created)
    assert (code, body['reason']) == (409, 'Conflict')  # created's resourceVersion is stale now
    code, renewed = http(standin, 'PATCH', f'/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/leader',
                         {'spec': {'renewTime': '2025-01-01T00:00:00.000000Z'}}, 'application/strategic-merge-patch+json')
    assert code == 200 and renewed['spec']['renewTime'] and renewed['spec']['holderIdentity'] == 'b'
    assert kubectl(standin, '-n', ns, 'get', 'lease', 'leader', '-o', 'jsonpath={.spec.holderIdentity}') == 'b'


def test_deployment_status_subresource(standin, ns):
    dep = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web', 'namespace': ns},
           'spec': {'replicas': 1, 'selector': {'matchLabels': {'app': 'web'}},
                    'template': {'metadata': {'labels': {'app': 'web'}},
                                 'spec': {'containers': [{'name': 'main', 'image': 'nginx:1'},
                                                         {'name': 'side', 'image': 'busybox:1'}]}}}}
    kubectl(standin, 'apply', '-f', '-', input=json.dumps(dep))
    code, d = http(standin, 'PATCH', f'/apis/apps/v1/namespaces/{ns}/deployments/web/status',
                   {'status': {'readyReplicas': 1, 'replicas': 1}, 'spec': {'replicas': 5}},
                   'application/merge-patch+json')
    assert code == 200 and d['status'] == {'readyReplicas': 1, 'replicas': 1}
    assert d['spec']['replicas'] == 1 and d['metadata']['generation'] == 1
    # kubectl's client-side apply sends a strategic merge patch keyed by container name
    dep['spec']['template']['spec']['containers'][0]['image'] = 'nginx:2'
    kubectl(standin, 'apply', '-f', '-', input=json.dumps(dep))
    d = kjson(standin, '-n', ns, 'get', 'deploy', 'web')
    assert [c['image'] for c in d['spec']['template']['spec']['containers']] == ['nginx:2', 'busybox:1']
    assert d['metadata']['generation'] == 2 and d['status']['readyReplicas'] == 1


def test_namespace_deletion_removes_contents(standin):
    kubectl(standin, 'create', 'namespace', 'doomed')
    kubectl(standin, '-n', 'doomed', 'create', 'configmap', 'inside', '--from-literal=a=1')
    kubectl(standin, 'delete', 'namespace', 'doomed')
    assert kjson(standin, 'get', 'configmaps', '-A', '--field-selector=metadata.namespace=doomed')['items'] == []
