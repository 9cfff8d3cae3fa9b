{{/*
Names and labels shared by every template. Kubernetes names and label values are at most 63
characters, so every name is truncated there (and a trailing "-" that truncation leaves is cut).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "kubeserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the release's resources: fullnameOverride, else "<release>-<name>", or the
release name alone when it already contains the name (helm install kubeserve ... -> "kubeserve").
*/}}
{{- define "kubeserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<chart>-<version>", for the helm.sh/chart label ("+" is not allowed in label values). */}}
{{- define "kubeserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods: never change them in an upgrade. */}}
{{- define "kubeserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of every object of the chart. */}}
{{- define "kubeserve.labels" -}}
helm.sh/chart: {{ include "kubeserve.chart" . }}
{{ include "kubeserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeserve
{{- end -}}

{{/* The operator's ServiceAccount: the created one, or serviceAccount.name. */}}
{{- define "kubeserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference from {repository, tag, digest} with a default tag:
  include "kubeserve.image" (dict "image" .Values.image "defaultTag" .Chart.AppVersion)
gives repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "kubeserve.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString (default .defaultTag .image.tag)) -}}
{{- end -}}
{{- end -}}

{{/* The metrics Service: "<fullname>-metrics", within 63 characters. */}}
{{- define "kubeserve.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kubeserve.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}
