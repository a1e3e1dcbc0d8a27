{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "edgewire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. The release name is used alone when it already contains the
chart name.
*/}}
{{- define "edgewire.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "edgewire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator pods. Immutable once installed (Deployment selector).
*/}}
{{- define "edgewire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgewire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels of every object the chart renders.
*/}}
{{- define "edgewire.labels" -}}
helm.sh/chart: {{ include "edgewire.chart" . }}
{{ include "edgewire.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: edgewire
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "edgewire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgewire.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "edgewire.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operator.repository (default .Chart.AppVersion .Values.image.operator.tag) }}
{{- end }}

{{/*
Agent image reference handed to the operator; the tag defaults to the chart's appVersion.
*/}}
{{- define "edgewire.agentImage" -}}
{{- printf "%s:%s" .Values.image.agent.repository (default .Chart.AppVersion .Values.image.agent.tag) }}
{{- end }}

{{/*
The namespaces the operator reconciles: watchNamespaces plus watchNamespace, without repeats, as a
comma-separated list ("" for every namespace).
*/}}
{{- define "edgewire.watchedNamespaces" -}}
{{- $all := .Values.watchNamespaces | default list }}
{{- with .Values.watchNamespace }}{{ $all = append $all . }}{{ end }}
{{- $all | uniq | join "," }}
{{- end }}

{{/*
What the controllers do in the namespaces they reconcile: the ClusterRole's rules in the default mode,
a Role's in each watched namespace with watchNamespaces.
*/}}
{{- define "edgewire.controllerRules" -}}
# The three kinds: watched by their controllers; patch/update for finalizers in metadata.
- apiGroups: ["edgewire.dev"]
  resources: ["eventbrokers", "mqttbrokers", "bridgelinks"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["edgewire.dev"]
  resources: ["eventbrokers/status", "mqttbrokers/status", "bridgelinks/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers subresource.
- apiGroups: ["edgewire.dev"]
  resources: ["eventbrokers/finalizers", "mqttbrokers/finalizers", "bridgelinks/finalizers"]
  verbs: ["update", "patch"]
# Children applied with server-side apply (create covers apply of an absent object), read
# Secrets for credentials and their hash, and the label-based sweep of unwanted children.
- apiGroups: [""]
  resources: ["secrets", "services", "serviceaccounts", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# StatefulSet volumes; deleted only with deletionPolicy: Delete.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "delete"]
# Pod status behind the readiness conditions.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Per-BridgeLink Role/RoleBinding letting the bridge agent patch its own bridgelinks/status
# (the operator can grant it because it holds that permission itself).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kubernetes Events on condition transitions.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
