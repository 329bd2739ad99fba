{{/*
Helpers of the session-sidecar chart: names and labels (once), the sidecar container and its
volumes (public: other charts `include` them), and validateValues.

Every helper takes a chart context: this chart's own root context (`.`) inside this chart, or
`(index .Subcharts "session-sidecar")` from a parent chart that depends on this one. Such a
context carries this chart's `.Values`, `.Chart` and the release's `.Release`, so names, the
image tag and the generated Secret's name are the same wherever the container is rendered.
*/}}

{{/* Chart name, cut to 63 characters (the DNS label limit). */}}
{{- define "session-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: `<release>-<chart>`, or the release name alone when it already
contains the chart name; cut to 63 characters because some Kubernetes name fields are limited
to that (by the DNS naming spec).
*/}}
{{- define "session-sidecar.fullname" -}}
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

{{/* `<chart>-<version>` for the helm.sh/chart label. */}}
{{- define "session-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "session-sidecar.labels" -}}
helm.sh/chart: {{ include "session-sidecar.chart" . }}
{{ include "session-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | toString | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the demo pods (immutable once a Deployment exists: keep them small). */}}
{{- define "session-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "session-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The sidecar image reference: repository, then `@digest` or `:tag` (default appVersion). */}}
{{- define "session-sidecar.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart generates for the HMAC secret (jwt.generateSecret). */}}
{{- define "session-sidecar.generatedJwtSecretName" -}}
{{- printf "%s-jwt" (include "session-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the chart must generate the HMAC secret: asked to, and no key material given. */}}
{{- define "session-sidecar.generatesJwtSecret" -}}
{{- if and .Values.jwt.generateSecret (not .Values.jwt.existingSecret) (empty .Values.jwt.publicKeys) }}true{{ end }}
{{- end }}

{{/* Name of the Secret that holds the HMAC secret, or "" when there is none. */}}
{{- define "session-sidecar.jwtSecretName" -}}
{{- if .Values.jwt.existingSecret }}
{{- .Values.jwt.existingSecret }}
{{- else if include "session-sidecar.generatesJwtSecret" . }}
{{- include "session-sidecar.generatedJwtSecretName" . }}
{{- end }}
{{- end }}

{{/*
The HMAC secret's value in an existing Secret (base64, as `lookup` returns `.data`), when it is
one the sidecar accepts: at least 32 bytes once trailing newlines are dropped (the sidecar's own
rule, RFC 7518 §3.2). "" otherwise. Takes (dict "data" <Secret .data or nil> "key" <key>).
*/}}
{{- define "session-sidecar.usableHmacSecret" -}}
{{- $v := index (.data | default dict) .key | default "" -}}
{{- if ge (len (regexReplaceAll "[\r\n]+$" (b64dec $v) "")) 32 }}{{ $v }}{{ end -}}
{{- end }}

{{/* Name of the Secret the chart generates for the admin credential (adminToken.create). */}}
{{- define "session-sidecar.generatedAdminTokenSecretName" -}}
{{- printf "%s-admin" (include "session-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the chart must generate the admin credential's Secret. */}}
{{- define "session-sidecar.generatesAdminToken" -}}
{{- if and .Values.adminToken.enabled .Values.adminToken.create }}true{{ end }}
{{- end }}

{{/* Name of the Secret that holds the admin credential, or "" when the session API is off. */}}
{{- define "session-sidecar.adminTokenSecretName" -}}
{{- if include "session-sidecar.generatesAdminToken" . }}
{{- include "session-sidecar.generatedAdminTokenSecretName" . }}
{{- else if .Values.adminToken.enabled }}
{{- .Values.adminToken.existingSecret }}
{{- end }}
{{- end }}

{{/*
The admin credential's value in an existing Secret (base64), when the sidecar accepts it:
non-empty and without whitespace once trailing newlines are dropped (a bearer token is one
word). "" otherwise. Takes (dict "data" <Secret .data or nil> "key" <key>).
*/}}
{{- define "session-sidecar.usableAdminToken" -}}
{{- $v := index (.data | default dict) .key | default "" -}}
{{- $text := regexReplaceAll "[\r\n]+$" (b64dec $v) "" -}}
{{- if and $text (not (regexMatch "\\s" $text)) }}{{ $v }}{{ end -}}
{{- end }}

{{/* File name of the admin credential in the app container, under adminToken.appMountPath. */}}
{{- define "session-sidecar.adminTokenFileName" -}}
admin-token
{{- end }}

{{/*
Path at which the app container reads the admin credential (with session-sidecar.appVolumeMounts),
e.g. `/var/run/session-sidecar/admin/admin-token`; "" when the session API is off.
*/}}
{{- define "session-sidecar.adminTokenAppPath" -}}
{{- if include "session-sidecar.adminTokenSecretName" . }}
{{- printf "%s/%s" (.Values.adminToken.appMountPath | trimSuffix "/") (include "session-sidecar.adminTokenFileName" .) }}
{{- end }}
{{- end }}

{{/* Where the secrets volume is mounted in the sidecar container. */}}
{{- define "session-sidecar.secretsDir" -}}
/etc/session-sidecar/secrets
{{- end }}

{{/* Host part of sidecar.listen (`127.0.0.1`, `[::1]`, `0.0.0.0`, ...). */}}
{{- define "session-sidecar.listenHost" -}}
{{- regexReplaceAll ":[0-9]+$" .Values.sidecar.listen "" }}
{{- end }}

{{/* "true" when sidecar.listen is a loopback address (only the pod itself reaches it). */}}
{{- define "session-sidecar.listenIsLoopback" -}}
{{- $host := include "session-sidecar.listenHost" . }}
{{- if or (hasPrefix "127." $host) (eq $host "[::1]") }}true{{ end }}
{{- end }}

{{/*
Base URL at which the pod's other containers reach the sidecar's API, e.g.
`http://127.0.0.1:8080` (a wildcard listen address is reached over loopback).
*/}}
{{- define "session-sidecar.apiUrl" -}}
{{- $host := include "session-sidecar.listenHost" . }}
{{- $port := regexFind "[0-9]+$" .Values.sidecar.listen }}
{{- if eq $host "0.0.0.0" }}{{ $host = "127.0.0.1" }}{{ end }}
{{- if eq $host "[::]" }}{{ $host = "[::1]" }}{{ end }}
{{- printf "http://%s:%s" $host $port }}
{{- end }}

{{/*
session-sidecar.container: the sidecar container, as one list item for `containers:` (or, with
sidecar.native, for `initContainers:`; it then carries `restartPolicy: Always`).

  spec:
    {{- if (index .Values "session-sidecar").sidecar.native }}
    initContainers:
      {{- include "session-sidecar.container" (index .Subcharts "session-sidecar") | nindent 6 }}
    {{- end }}
    containers:
      - name: my-app
        env:
          {{- include "session-sidecar.appEnv" (index .Subcharts "session-sidecar") | nindent 10 }}
        volumeMounts:
          {{- include "session-sidecar.appVolumeMounts" (index .Subcharts "session-sidecar") | nindent 10 }}
        ...
    volumes:
      {{- include "session-sidecar.volumes" (index .Subcharts "session-sidecar") | nindent 6 }}

Configuration is passed as SIDECAR_* environment variables (each `serve` flag reads one);
secrets are files in one read-only projected volume (session-sidecar.volumes), never env values.
*/}}
{{- define "session-sidecar.container" -}}
{{- $dir := include "session-sidecar.secretsDir" . -}}
- name: {{ .Values.sidecar.name }}
  image: {{ include "session-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- with .Values.sidecar.command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  args:
    - serve
  {{- if .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  env:
    - name: SIDECAR_LISTEN
      value: {{ .Values.sidecar.listen | quote }}
    - name: SIDECAR_METRICS_LISTEN
      value: {{ printf "%s:%d" .Values.sidecar.metricsBindAddress (int .Values.sidecar.metricsPort) | quote }}
    - name: SIDECAR_LOG_FORMAT
      value: {{ .Values.logFormat | quote }}
    - name: RUST_LOG
      value: {{ .Values.sidecar.logLevel | quote }}
    {{- with .Values.redis.nodes }}
    - name: SIDECAR_REDIS_NODES
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with .Values.redis.username }}
    - name: SIDECAR_REDIS_USERNAME
      value: {{ . | quote }}
    {{- end }}
    {{- if .Values.redis.existingSecret }}
    - name: SIDECAR_REDIS_PASSWORD_FILE
      value: {{ printf "%s/redis/password" $dir | quote }}
    {{- end }}
    {{- if .Values.redis.tls.caSecret }}
    - name: SIDECAR_REDIS_CA_FILE
      value: {{ printf "%s/redis/ca.crt" $dir | quote }}
    {{- end }}
    {{- if .Values.redis.readFromReplicas }}
    - name: SIDECAR_REDIS_READ_FROM_REPLICAS
      value: "true"
    {{- end }}
    - name: SIDECAR_REDIS_KEY_PREFIX
      value: {{ .Values.redis.keyPrefix | quote }}
    - name: SIDECAR_REDIS_CONNECT_TIMEOUT_MS
      value: {{ .Values.redis.connectTimeoutMs | int64 | quote }}
    - name: SIDECAR_REDIS_COMMAND_TIMEOUT_MS
      value: {{ .Values.redis.commandTimeoutMs | int64 | quote }}
    - name: SIDECAR_REDIS_REPLICATION_WAIT_MS
      value: {{ .Values.redis.replicationWaitMs | int64 | quote }}
    {{- if include "session-sidecar.jwtSecretName" . }}
    - name: SIDECAR_JWT_SECRET_FILE
      value: {{ printf "%s/jwt/secret" $dir | quote }}
    {{- end }}
    {{- with .Values.jwt.publicKeys }}
    {{- $files := list }}
    {{- range $i, $k := . }}
    {{- $path := printf "%s/jwt/public-%d.pem" $dir $i }}
    {{- $files = append $files (ternary (printf "%s=%s" ($k.kid | default "") $path) $path (not (empty $k.kid))) }}
    {{- end }}
    - name: SIDECAR_JWT_PUBLIC_KEY_FILE
      value: {{ join "," $files | quote }}
    {{- end }}
    {{- with .Values.jwt.algorithms }}
    - name: SIDECAR_ALGORITHMS
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with .Values.jwt.issuer }}
    - name: SIDECAR_ISSUER
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.jwt.audience }}
    - name: SIDECAR_AUDIENCE
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with .Values.identityProviders.jwksUrls }}
    - name: SIDECAR_JWKS_URL
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with .Values.identityProviders.oidcIssuers }}
    - name: SIDECAR_OIDC_ISSUER
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with .Values.claimHeaders }}
    - name: SIDECAR_CLAIM_HEADER
      value: {{ join "," . | quote }}
    {{- end }}
    - name: SIDECAR_LEEWAY
      value: {{ .Values.jwt.leeway | int64 | quote }}
    - name: SIDECAR_CACHE_TTL
      value: {{ .Values.cache.ttl | int64 | quote }}
    - name: SIDECAR_CACHE_MAX_ENTRIES
      value: {{ .Values.cache.maxEntries | int64 | quote }}
    - name: SIDECAR_CACHE_MAX_BYTES
      value: {{ .Values.cache.maxBytes | int64 | quote }}
    {{- with .Values.tokenCookie }}
    - name: SIDECAR_TOKEN_COOKIE
      value: {{ . | quote }}
    {{- end }}
    {{- if include "session-sidecar.adminTokenSecretName" . }}
    - name: SIDECAR_ADMIN_TOKEN_FILE
      value: {{ printf "%s/admin/token" $dir | quote }}
    {{- end }}
    {{- if .Values.sessionKeys }}
    - name: SIDECAR_SESSION_KEYS
      value: "true"
    - name: SIDECAR_SESSION_KEY_LOOKUPS_PER_SECOND
      value: {{ .Values.sessionKeyLookupsPerSecond | int64 | quote }}
    {{- end }}
    - name: SIDECAR_SESSION_TTL
      value: {{ .Values.sessionTtl | int64 | quote }}
    {{- with .Values.sidecar.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: sidecar-metrics
      containerPort: {{ .Values.sidecar.metricsPort }}
      protocol: TCP
    {{- if not (include "session-sidecar.listenIsLoopback" .) }}
    - name: sidecar-api
      containerPort: {{ regexFind "[0-9]+$" .Values.sidecar.listen | int }}
      protocol: TCP
    {{- end }}
  {{- with .Values.sidecar.startupProbe }}
  {{- if .enabled }}
  startupProbe:
    httpGet:
      path: /healthz
      port: sidecar-metrics
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with .Values.sidecar.livenessProbe }}
  {{- if .enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: sidecar-metrics
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with .Values.sidecar.readinessProbe }}
  {{- if .enabled }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: sidecar-metrics
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
    successThreshold: {{ .successThreshold }}
  {{- end }}
  {{- end }}
  {{- if and (not .Values.sidecar.native) (gt (int .Values.sidecar.preStopSleepSeconds) 0) }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .Values.sidecar.preStopSleepSeconds }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if include "session-sidecar.hasSecrets" . }}
  volumeMounts:
    - name: {{ include "session-sidecar.volumeName" . }}
      mountPath: {{ $dir }}
      readOnly: true
  {{- end }}
{{- end }}

{{/* Name of the sidecar's secrets volume: unique per sidecar container in a pod. */}}
{{- define "session-sidecar.volumeName" -}}
{{- printf "%s-secrets" .Values.sidecar.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the sidecar mounts at least one secret. */}}
{{- define "session-sidecar.hasSecrets" -}}
{{- if or (include "session-sidecar.jwtSecretName" .) .Values.jwt.publicKeys .Values.redis.existingSecret .Values.redis.tls.caSecret (include "session-sidecar.adminTokenSecretName" .) }}true{{ end }}
{{- end }}

{{/*
session-sidecar.volumes: the pod's volumes for the sidecar, as list items for `volumes:`.

One projected, read-only volume `<sidecar.name>-secrets` gathers every secret file the sidecar
reads (mounted in the sidecar container alone):
  jwt/secret          the HMAC secret            (jwt.existingSecret or the generated Secret)
  jwt/public-<i>.pem  the i-th public key        (jwt.publicKeys[i])
  redis/password      the Redis ACL password     (redis.existingSecret)
  redis/ca.crt        the Redis TLS CA bundle    (redis.tls.caSecret)
  admin/token         the admin credential       (generated Secret or adminToken.existingSecret)
With adminToken.enabled, a second volume `<sidecar.name>-admin-token` holds the admin credential
alone, as the file `admin-token`, for the app container (session-sidecar.appVolumeMounts): the
app never sees the HMAC secret or the Redis password.
Mode 0444: each container runs under its own uid, whatever fsGroup the pod has; both volumes are
mounted read-only. Renders nothing when there is no secret.
*/}}
{{- define "session-sidecar.volumes" -}}
{{- if include "session-sidecar.hasSecrets" . -}}
- name: {{ include "session-sidecar.volumeName" . }}
  projected:
    defaultMode: 292 # 0444
    sources:
      {{- with include "session-sidecar.jwtSecretName" . }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $.Values.jwt.secretKey }}
              path: jwt/secret
      {{- end }}
      {{- range $i, $k := .Values.jwt.publicKeys }}
      - secret:
          name: {{ $k.existingSecret }}
          items:
            - key: {{ $k.key }}
              path: {{ printf "jwt/public-%d.pem" $i }}
      {{- end }}
      {{- if .Values.redis.existingSecret }}
      - secret:
          name: {{ .Values.redis.existingSecret }}
          items:
            - key: {{ .Values.redis.passwordKey }}
              path: redis/password
      {{- end }}
      {{- if .Values.redis.tls.caSecret }}
      - secret:
          name: {{ .Values.redis.tls.caSecret }}
          items:
            - key: {{ .Values.redis.tls.caKey }}
              path: redis/ca.crt
      {{- end }}
      {{- with include "session-sidecar.adminTokenSecretName" . }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $.Values.adminToken.key }}
              path: admin/token
      {{- end }}
{{- end }}
{{- with include "session-sidecar.adminTokenSecretName" . }}
- name: {{ include "session-sidecar.adminTokenVolumeName" $ }}
  secret:
    secretName: {{ . }}
    defaultMode: 292 # 0444
    items:
      - key: {{ $.Values.adminToken.key }}
        path: {{ include "session-sidecar.adminTokenFileName" $ }}
{{- end }}
{{- end }}

{{/* Name of the volume that carries the admin credential to the app container. */}}
{{- define "session-sidecar.adminTokenVolumeName" -}}
{{- printf "%s-admin-token" .Values.sidecar.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
session-sidecar.appVolumeMounts: for the app container that calls the session API, as list items
for its `volumeMounts:`: the admin credential, read-only, at adminToken.appMountPath (the file
`admin-token` in it). Renders nothing when adminToken.enabled is false.

    volumeMounts:
      {{- include "session-sidecar.appVolumeMounts" $sidecar | nindent 6 }}

The app then sends `Authorization: Bearer <the file's content>` on every session API call.
*/}}
{{- define "session-sidecar.appVolumeMounts" -}}
{{- if include "session-sidecar.adminTokenSecretName" . -}}
- name: {{ include "session-sidecar.adminTokenVolumeName" . }}
  mountPath: {{ .Values.adminToken.appMountPath | trimSuffix "/" }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
session-sidecar.appEnv: for the app container, as list items for its `env:`:
  SESSION_SIDECAR_URL               where the sidecar's API is (session-sidecar.apiUrl)
  SESSION_SIDECAR_ADMIN_TOKEN_FILE  the admin credential's file (with appVolumeMounts), when enabled
No secret is in the environment: only the path of the file.
*/}}
{{- define "session-sidecar.appEnv" -}}
- name: SESSION_SIDECAR_URL
  value: {{ include "session-sidecar.apiUrl" . | quote }}
{{- with include "session-sidecar.adminTokenAppPath" . }}
- name: SESSION_SIDECAR_ADMIN_TOKEN_FILE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* "true" when a value is neither null nor "" (0 is a value). */}}
{{- define "session-sidecar.isSet" -}}
{{- if not (or (kindIs "invalid" .) (eq (toString .) "")) }}true{{ end }}
{{- end }}

{{/*
Memory, in bytes, of a Kubernetes quantity written with a binary or decimal suffix (Ki, Mi, Gi,
Ti, k, M, G, T) or none; "" for any other spelling (then no check is made).
*/}}
{{- define "session-sidecar.quantityBytes" -}}
{{- $q := toString . }}
{{- $m := regexFindAll "^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q 1 }}
{{- if $m }}
{{- $n := regexReplaceAll "[^0-9]" $q "" | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+" $q "" }}
{{- $mul := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- mul $n (index $mul $unit) }}
{{- end }}
{{- end }}

{{/*
validateValues: every problem with the values, gathered, then one failure that lists them all
(bitnami's pattern). Rendered by templates/validate.yaml, so it runs in this chart and in every
parent chart that depends on it.
*/}}
{{- define "session-sidecar.validateValues" -}}
{{- $messages := list -}}
{{- range $check := list "keys" "secretContents" "redis" "adminToken" "exposed" "metrics" "ports" "memory" "native" "shutdown" "pdb" "serviceMonitor" -}}
{{- $messages = append $messages (include (printf "session-sidecar.validateValues.%s" $check) $ | trim) -}}
{{- end -}}
{{- $messages = without $messages "" -}}
{{- $message := join "\n" $messages -}}
{{- if $message -}}
{{- printf "\nVALUES VALIDATION:\n%s" $message | fail -}}
{{- end -}}
{{- end -}}

{{/* The sidecar refuses to start without a key: refuse the values first. */}}
{{- define "session-sidecar.validateValues.keys" -}}
{{- if not (or (include "session-sidecar.jwtSecretName" .) .Values.jwt.publicKeys .Values.identityProviders.jwksUrls .Values.identityProviders.oidcIssuers) -}}
session-sidecar: jwt
    No key to verify tokens with: set jwt.existingSecret (an HMAC secret), jwt.publicKeys
    (PEM public keys), identityProviders.jwksUrls or identityProviders.oidcIssuers (an identity
    provider's keys), or jwt.generateSecret=true (a random secret, for trying the chart).
{{- end -}}
{{- end -}}

{{/*
Secrets that already exist in the cluster (`lookup`; with `helm template` and `helm lint` there is
no cluster and nothing is checked) must hold what the sidecar accepts, or its pods would crash
at start-up: an HMAC secret of at least 32 bytes, an admin credential that is one word. A Secret
or key that is missing is left to Kubernetes (the pod waits for it).
*/}}
{{- define "session-sidecar.validateValues.secretContents" -}}
{{- $ns := .Release.Namespace -}}
{{- with .Values.jwt.existingSecret -}}
{{- $s := lookup "v1" "Secret" $ns . -}}
{{- include "session-sidecar.hmacSecretProblem" (dict "data" $s.data "name" . "key" $.Values.jwt.secretKey) -}}
{{- end -}}
{{- if and .Values.adminToken.enabled (not .Values.adminToken.create) .Values.adminToken.existingSecret }}
{{- $s := lookup "v1" "Secret" $ns .Values.adminToken.existingSecret -}}
{{- include "session-sidecar.adminTokenProblem" (dict "data" $s.data "name" .Values.adminToken.existingSecret "key" .Values.adminToken.key) -}}
{{- end -}}
{{- end -}}

{{/* A message when a found Secret's HMAC secret is too short. Takes (dict "data" "name" "key"). */}}
{{- define "session-sidecar.hmacSecretProblem" -}}
{{- if and .data (hasKey .data .key) (not (include "session-sidecar.usableHmacSecret" .)) }}
session-sidecar: jwt.existingSecret
    Secret {{ .name }}, key {{ .key }}: the HMAC secret is shorter than 32 bytes, which the sidecar
    refuses (RFC 7518 §3.2). Put a longer one in it, e.g. `openssl rand -base64 48`.
{{- end -}}
{{- end -}}

{{/* A message when a found Secret's admin credential is unusable. Takes (dict "data" "name" "key"). */}}
{{- define "session-sidecar.adminTokenProblem" -}}
{{- if and .data (hasKey .data .key) (not (include "session-sidecar.usableAdminToken" .)) }}
session-sidecar: adminToken.existingSecret
    Secret {{ .name }}, key {{ .key }}: the admin credential is empty or holds whitespace, which
    the sidecar refuses (it is sent as one bearer token). Use e.g. `openssl rand -hex 32`.
{{- end -}}
{{- end -}}

{{/* The sidecar takes all seeds over TLS or none, and a CA only for TLS. */}}
{{- define "session-sidecar.validateValues.redis" -}}
{{- $tls := 0 -}}
{{- range .Values.redis.nodes }}{{ if hasPrefix "rediss://" . }}{{ $tls = add1 $tls }}{{ end }}{{ end -}}
{{- if and (gt $tls 0) (lt $tls (len .Values.redis.nodes)) -}}
session-sidecar: redis.nodes
    redis.nodes mixes redis:// and rediss:// seeds: make them all rediss:// (TLS) or all redis://.
{{- end -}}
{{- if and .Values.redis.tls.caSecret (eq $tls 0) }}
session-sidecar: redis.tls.caSecret
    redis.tls.caSecret is set but no redis.nodes is rediss://: the CA would be unused.
{{- end -}}
{{- end -}}

{{/*
The admin credential comes from exactly one place: the chart generates it (create) or you name
your Secret (existingSecret with create=false).
*/}}
{{- define "session-sidecar.validateValues.adminToken" -}}
{{- with .Values.adminToken -}}
{{- if and .enabled .create .existingSecret -}}
session-sidecar: adminToken.existingSecret
    adminToken.existingSecret={{ .existingSecret }} is set while adminToken.create=true: the chart
    would generate its own credential and ignore your Secret. Set adminToken.create=false to use
    {{ .existingSecret }}, or leave adminToken.existingSecret empty to have one generated.
{{- else if and .enabled (not .create) (not .existingSecret) -}}
session-sidecar: adminToken.create
    adminToken.create=false needs adminToken.existingSecret (the Secret holding the credential,
    key adminToken.key), or set adminToken.create=true, or adminToken.enabled=false to turn the
    session API off.
{{- else if and (not .enabled) .existingSecret -}}
session-sidecar: adminToken.enabled
    adminToken.existingSecret={{ .existingSecret }} is set but adminToken.enabled=false: the
    credential would be unused and the session API off. Set adminToken.enabled=true (and
    adminToken.create=false), or leave adminToken.existingSecret empty.
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A non-loopback API exposes the session API to the network: it needs a credential. */}}
{{- define "session-sidecar.validateValues.exposed" -}}
{{- if and (not (include "session-sidecar.listenIsLoopback" .)) (not .Values.adminToken.enabled) -}}
session-sidecar: sidecar.listen
    sidecar.listen={{ .Values.sidecar.listen }} is not a loopback address: the session API would be
    reachable from other pods. Keep it on 127.0.0.1, or set adminToken.enabled=true.
{{- end -}}
{{- end -}}

{{/* The kubelet probes and Prometheus reach the admin port from outside the pod. */}}
{{- define "session-sidecar.validateValues.metrics" -}}
{{- $probes := or .Values.sidecar.livenessProbe.enabled .Values.sidecar.readinessProbe.enabled .Values.sidecar.startupProbe.enabled -}}
{{- if and $probes (or (hasPrefix "127." .Values.sidecar.metricsBindAddress) (eq .Values.sidecar.metricsBindAddress "[::1]")) -}}
session-sidecar: sidecar.metricsBindAddress
    sidecar.metricsBindAddress={{ .Values.sidecar.metricsBindAddress }} is loopback, but the kubelet
    probes the admin port from outside the pod: use 0.0.0.0 (or disable every probe).
{{- end -}}
{{- end -}}

{{/* The containers of a pod share one network namespace: their ports must differ. */}}
{{- define "session-sidecar.validateValues.ports" -}}
{{- $api := regexFind "[0-9]+$" .Values.sidecar.listen | int -}}
{{- $metrics := int .Values.sidecar.metricsPort -}}
{{- if eq $api $metrics -}}
session-sidecar: sidecar.metricsPort
    sidecar.metricsPort={{ $metrics }} is also the port of sidecar.listen: they must differ.
{{- end -}}
{{- if and .Values.app.enabled (or (eq (int .Values.app.port) $api) (eq (int .Values.app.port) $metrics)) }}
session-sidecar: app.port
    app.port={{ .Values.app.port }} is a port of the sidecar ({{ $api }} or {{ $metrics }}): the
    containers of a pod share one network, so pick another.
{{- end -}}
{{- end -}}

{{/*
The cache holds at most cache.maxBytes (each entry weighs at least maxBytes / maxEntries, so the
byte bound also holds the count), and fewer when cache.maxEntries typical entries (about 1.2 KiB
each) weigh less. The container's memory limit must hold that, a quarter more (allocator and
moka overhead beyond the weighed bytes), and 64 MiB for the rest of the process; below that the
pod gets OOM-killed as the cache fills.
*/}}
{{- define "session-sidecar.validateValues.memory" -}}
{{- $limit := "" -}}
{{- if and .Values.resources .Values.resources.limits .Values.resources.limits.memory -}}
{{- $limit = include "session-sidecar.quantityBytes" .Values.resources.limits.memory -}}
{{- end -}}
{{- if $limit -}}
{{- $cache := min (int64 .Values.cache.maxBytes) (mul (int64 .Values.cache.maxEntries) 1229) -}}
{{- $need := add (div (mul $cache 5) 4) 67108864 -}}
{{- if lt (int64 $limit) (int64 $need) -}}
session-sidecar: resources.limits.memory
    resources.limits.memory={{ .Values.resources.limits.memory }} cannot hold the cache (cache.maxBytes={{ int64 .Values.cache.maxBytes }},
    cache.maxEntries={{ int64 .Values.cache.maxEntries }} of about 1.2 KiB): {{ div $cache 1048576 }}Mi, a quarter more and 64 MiB
    for the process make {{ div (int64 $need) 1048576 }}Mi. Raise the limit, or lower cache.maxBytes.
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Native sidecars (restartPolicy on an init container) exist from Kubernetes 1.29. */}}
{{- define "session-sidecar.validateValues.native" -}}
{{- if and .Values.sidecar.native (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) -}}
session-sidecar: sidecar.native
    sidecar.native=true needs Kubernetes >= 1.29 (this cluster: {{ .Capabilities.KubeVersion.Version }}):
    set sidecar.native=false (and sidecar.preStopSleepSeconds on Kubernetes >= 1.30).
{{- end -}}
{{- if and (not .Values.sidecar.native) (gt (int .Values.sidecar.preStopSleepSeconds) 0) (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
session-sidecar: sidecar.preStopSleepSeconds
    The preStop sleep action needs Kubernetes >= 1.30 (this cluster: {{ .Capabilities.KubeVersion.Version }}): set it to 0.
{{- end -}}
{{- end -}}

{{/* The sidecar needs up to 8 s to drain after SIGTERM, after any preStop sleep. */}}
{{- define "session-sidecar.validateValues.shutdown" -}}
{{- $need := add 10 (ternary 0 (int .Values.sidecar.preStopSleepSeconds) .Values.sidecar.native) | max 15 -}}
{{- if and .Values.app.enabled (lt (int .Values.terminationGracePeriodSeconds) (int $need)) -}}
session-sidecar: terminationGracePeriodSeconds
    terminationGracePeriodSeconds={{ .Values.terminationGracePeriodSeconds }} is too short: the sidecar
    needs {{ $need }} s (its preStop sleep, then up to 8 s of draining, and a margin).
{{- end -}}
{{- end -}}

{{/* A PodDisruptionBudget takes exactly one of minAvailable and maxUnavailable. */}}
{{- define "session-sidecar.validateValues.pdb" -}}
{{- with .Values.podDisruptionBudget -}}
{{- if and .enabled (eq (include "session-sidecar.isSet" .minAvailable) (include "session-sidecar.isSet" .maxUnavailable)) -}}
session-sidecar: podDisruptionBudget
    Set exactly one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable.
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A ServiceMonitor scrapes a Service: without the demo app the pods must be named. */}}
{{- define "session-sidecar.validateValues.serviceMonitor" -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.app.enabled) (empty .Values.service.podSelector) -}}
session-sidecar: serviceMonitor.enabled
    serviceMonitor.enabled=true with app.enabled=false needs service.podSelector: the labels of
    your pods that run the sidecar, so that the metrics Service can select them.
{{- end -}}
{{- end -}}
