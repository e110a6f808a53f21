{{/*
Names. The full name is RELEASE-codehub unless the release name already contains the
chart name; both are cut to 63 characters (a DNS label) for the objects' names.
*/}}
{{- define "codehub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codehub.fullname" -}}
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

{{/* Labels on every object: codehub.labels; pod templates add their selector to codehub.chartLabels. */}}
{{- define "codehub.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "codehub.labels" -}}
{{ include "codehub.chartLabels" . }}
app.kubernetes.io/name: {{ include "codehub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The hub pods' selector (stable across upgrades: never add to it). */}}
{{- define "codehub.hubSelector" -}}
app.kubernetes.io/name: {{ include "codehub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{/*
The workspace pods' labels, as codehub sets them: app=codehub-workspace and
codehub.io/hub=HUB_NAME (kube.hub_name, the release's full name), so that two releases
in one namespace never select each other's workspaces.
*/}}
{{- define "codehub.workspaceSelector" -}}
app: codehub-workspace
codehub.io/hub: {{ include "codehub.fullname" . }}
{{- end -}}

{{- define "codehub.serviceAccountName" -}}
{{- default (include "codehub.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "codehub.workspaceServiceAccountName" -}}
{{- $sa := .Values.singleuser.serviceAccount -}}
{{- if $sa.name -}}
{{- $sa.name -}}
{{- else if $sa.create -}}
{{- printf "%s-workspace" (include "codehub.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Secret of the *.DOMAIN certificate (hub.userSubdomains.domain). */}}
{{- define "codehub.wildcardSecretName" -}}
{{- default (printf "%s-wildcard" .Values.ingress.tls.secretName) .Values.ingress.tls.wildcardSecretName -}}
{{- end -}}

{{/*
The hub's host and port part of the workspaces' origins, from the public URL the
configuration ends up with (hub.extraConfig included): dict with scheme, host, port
(":PORT" or empty). Empty dict when no public URL is set.
*/}}
{{- define "codehub.publicURLParts" -}}
{{- $url := dig "server" "public_url" "" (include "codehub.config" . | fromYaml) -}}
{{- if $url -}}
{{- $u := urlParse $url -}}
{{- toJson (dict "url" $url "scheme" (lower $u.scheme) "host" (lower $u.hostname) "port" (regexFind ":[0-9]+$" $u.host)) -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{- define "codehub.secretName" -}}
{{- default (printf "%s-secret" (include "codehub.fullname" .)) .Values.hub.existingSecret -}}
{{- end -}}

{{- define "codehub.hubImage" -}}
{{- printf "%s:%s" .Values.hub.image.repository (default .Chart.AppVersion .Values.hub.image.tag) -}}
{{- end -}}

{{- define "codehub.workspaceImage" -}}
{{- printf "%s:%s" .Values.singleuser.image.name (default .Chart.AppVersion .Values.singleuser.image.tag) -}}
{{- end -}}

{{/* Where the hub pod mounts things. */}}
{{- define "codehub.configFile" -}}/etc/codehub/config/codehub.yaml{{- end -}}
{{- define "codehub.secretFile" -}}/etc/codehub/secret/hub-secret{{- end -}}
{{- define "codehub.dbPasswordFile" -}}/etc/codehub/db/password{{- end -}}
{{- define "codehub.dataDir" -}}/var/lib/codehub{{- end -}}
{{- define "codehub.port" -}}8000{{- end -}}

{{/*
Checks the combinations the schema cannot express; fails the render with the reason.
*/}}
{{- define "codehub.validate" -}}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.postgres.urlSecret.name) -}}
{{- fail "store.type=postgres needs store.postgres.urlSecret.name: the Secret holding the database URL" -}}
{{- end -}}
{{- $sa := .Values.singleuser.serviceAccount -}}
{{- if and $sa.create (not $sa.deployNamespace) -}}
{{- fail "singleuser.serviceAccount.create needs singleuser.serviceAccount.deployNamespace: the namespace where users may deploy" -}}
{{- end -}}
{{- if and $sa.create (eq $sa.deployNamespace .Release.Namespace) -}}
{{- fail (printf "singleuser.serviceAccount.deployNamespace must not be the hub's namespace %q: rights there would reach the other users' pods and volumes" .Release.Namespace) -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- fail "ingress.enabled needs ingress.host" -}}
{{- end -}}
{{- include "codehub.validateUserSubdomains" . -}}
{{- end -}}

{{/*
Per-user origins: the domain as codehub accepts it (it refuses others at start), a public
URL to take the scheme and port from, https unless the operator opts out, and a hub host
that is not itself a workspace's origin. The schema has checked the type, the length and
the host name syntax; these give the reason for what it lets through.
*/}}
{{- define "codehub.validateUserSubdomains" -}}
{{- $us := .Values.hub.userSubdomains -}}
{{- $domain := $us.domain -}}
{{- $configured := dig "proxy" "user_subdomains" "" (include "codehub.config" . | fromYaml) -}}
{{- if ne (toString $configured) (toString $domain) -}}
{{- fail "set per-user origins with hub.userSubdomains.domain, not hub.extraConfig.proxy.user_subdomains: the chart then serves *.DOMAIN on the Ingress and checks the public URL" -}}
{{- end -}}
{{- if $domain -}}
{{- $what := printf "hub.userSubdomains.domain %q" $domain -}}
{{- if ne $domain (lower $domain) -}}
{{- fail (printf "%s must be lowercase (codehub refuses other domains at start)" $what) -}}
{{- end -}}
{{- if hasSuffix "." $domain -}}
{{- fail (printf "%s must not end with a dot" $what) -}}
{{- end -}}
{{- if regexMatch "^[0-9.]+$" $domain -}}
{{- fail (printf "%s must be a domain name, not an IP address: workspaces are served at NAME.DOMAIN" $what) -}}
{{- end -}}
{{- if regexMatch "(^|[.])([0-9]+|0[xX][0-9a-fA-F]*)$" $domain -}}
{{- fail (printf "%s must not end in a numeric label: browsers would read NAME.DOMAIN as an IPv4 address" $what) -}}
{{- end -}}
{{- if gt (len $domain) 220 -}}
{{- fail (printf "%s is longer than 220 characters: NAME.DOMAIN must fit DNS's 253" $what) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$" $domain) -}}
{{- fail (printf "%s is not a domain name: labels of lowercase letters, digits and inner hyphens joined by dots, as in ws.example.org" $what) -}}
{{- end -}}
{{- $pub := include "codehub.publicURLParts" . | fromJson -}}
{{- if not $pub -}}
{{- fail "hub.userSubdomains.domain needs the hub's public URL (the workspaces' origins take its scheme and port): set hub.publicURL, or enable the ingress (ingress.enabled, ingress.host)" -}}
{{- end -}}
{{- if and (ne $pub.scheme "https") (not $us.allowInsecureHTTP) -}}
{{- fail (printf `hub.userSubdomains.domain needs an https public URL, not %q: over plain HTTP no cookie can be a __Host- cookie, so a page in one user's workspace can set cookies for the other workspaces and the hub (docs/security.md, "Per-user origins over plain HTTP"). Serve it over TLS (ingress.tls.enabled, or an https hub.publicURL behind your own TLS proxy), or accept that with hub.userSubdomains.allowInsecureHTTP=true` $pub.url) -}}
{{- end -}}
{{- $suffix := printf ".%s" $domain -}}
{{- if hasSuffix $suffix $pub.host -}}
{{- $label := trimSuffix $suffix $pub.host -}}
{{- if not (contains "." $label) -}}
{{- fail (printf "the hub's host %q is NAME.DOMAIN for hub.userSubdomains.domain %q: codehub would serve it as user %q's workspace, never the hub. Pick a domain the hub's host is not directly under, e.g. the hub's host itself (workspaces at NAME.%s)" $pub.host $domain $label $pub.host) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
codehub's configuration file (docs/config.md), derived from the values, with
hub.extraConfig merged over it. The database URL and its password never appear here:
they come from Secrets (CODEHUB_STORE_URL, store.password_file).
*/}}
{{- define "codehub.config" -}}
{{- $v := .Values -}}
{{- $su := $v.singleuser -}}
{{- $server := dict "bind" (printf "0.0.0.0:%s" (include "codehub.port" .)) "data_dir" (include "codehub.dataDir" .) -}}
{{- if $v.hub.publicURL -}}
{{- $_ := set $server "public_url" $v.hub.publicURL -}}
{{- else if $v.ingress.enabled -}}
{{- $_ := set $server "public_url" (printf "%s://%s" (ternary "https" "http" $v.ingress.tls.enabled) $v.ingress.host) -}}
{{- end -}}
{{- if $v.hub.trustedProxies -}}
{{- $_ := set $server "trusted_proxies" $v.hub.trustedProxies -}}
{{- end -}}
{{- $store := dict -}}
{{- if eq $v.store.type "postgres" -}}
{{- $_ := set $store "pool_size" (int $v.store.postgres.poolSize) -}}
{{- if $v.store.postgres.passwordSecret.name -}}
{{- $_ := set $store "password_file" (include "codehub.dbPasswordFile" .) -}}
{{- end -}}
{{- end -}}
{{- $auth := dict "open_signup" $v.auth.openSignup "min_password_length" (int $v.auth.minPasswordLength) "secret_file" (include "codehub.secretFile" .) -}}
{{- if $v.auth.allowedUsers -}}
{{- $_ := set $auth "allowed_users" $v.auth.allowedUsers -}}
{{- end -}}
{{- if $v.auth.adminUsers -}}
{{- $_ := set $auth "admin_users" $v.auth.adminUsers -}}
{{- end -}}
{{- $cull := dict "timeout" (ternary $v.cull.timeout "0" $v.cull.enabled) "every" $v.cull.every -}}
{{- $kube := dict "hub_name" (include "codehub.fullname" .) "image" (include "codehub.workspaceImage" .) "image_pull_policy" $su.image.pullPolicy "uid" (int $su.uid) "gid" (int $su.gid) "fs_gid" (int $su.fsGid) "port" (int $su.port) "home_mount_path" $su.storage.homeMountPath "storage_capacity" $su.storage.capacity "storage_access_modes" $su.storage.accessModes -}}
{{- if $su.storage.storageClass -}}
{{- $_ := set $kube "storage_class" $su.storage.storageClass -}}
{{- end -}}
{{- if $su.cpu.guarantee -}}{{- $_ := set $kube "cpu_guarantee" (toString $su.cpu.guarantee) -}}{{- end -}}
{{- if $su.cpu.limit -}}{{- $_ := set $kube "cpu_limit" (toString $su.cpu.limit) -}}{{- end -}}
{{- if $su.memory.guarantee -}}{{- $_ := set $kube "mem_guarantee" (toString $su.memory.guarantee) -}}{{- end -}}
{{- if $su.memory.limit -}}{{- $_ := set $kube "mem_limit" (toString $su.memory.limit) -}}{{- end -}}
{{- $wsa := include "codehub.workspaceServiceAccountName" . -}}
{{- if $wsa -}}
{{- $_ := set $kube "service_account" $wsa -}}
{{- end -}}
{{- $_ := set $kube "automount_service_account_token" $su.serviceAccount.automountToken -}}
{{- $env := list -}}
{{- range $name, $value := $su.env -}}
{{- $env = append $env (printf "%s=%v" $name $value) -}}
{{- end -}}
{{- if $env -}}
{{- $_ := set $kube "env" $env -}}
{{- end -}}
{{- $volumes := $su.extraVolumes -}}
{{- $mounts := $su.extraVolumeMounts -}}
{{- if $su.dockerSocket.enabled -}}
{{- $volumes = append $volumes (dict "name" "docker-socket" "hostPath" (dict "path" $su.dockerSocket.hostPath "type" "Socket")) -}}
{{- $mounts = append $mounts (dict "name" "docker-socket" "mountPath" "/var/run/docker.sock") -}}
{{- end -}}
{{- if $volumes -}}
{{- $_ := set $kube "volumes" $volumes -}}
{{- end -}}
{{- if $mounts -}}
{{- $_ := set $kube "volume_mounts" $mounts -}}
{{- end -}}
{{- if $su.nodeSelector -}}{{- $_ := set $kube "node_selector" $su.nodeSelector -}}{{- end -}}
{{- if $su.tolerations -}}{{- $_ := set $kube "tolerations" $su.tolerations -}}{{- end -}}
{{- if $su.extraLabels -}}{{- $_ := set $kube "labels" $su.extraLabels -}}{{- end -}}
{{- if $su.extraAnnotations -}}{{- $_ := set $kube "annotations" $su.extraAnnotations -}}{{- end -}}
{{- if $su.profiles -}}{{- $_ := set $kube "profiles" $su.profiles -}}{{- end -}}
{{- $proxy := dict "admin_access" $v.auth.adminAccess -}}
{{- if $v.hub.userSubdomains.domain -}}
{{- $_ := set $proxy "user_subdomains" $v.hub.userSubdomains.domain -}}
{{- end -}}
{{- $config := dict
      "server" $server
      "log" (dict "level" $v.hub.logLevel "format" "json")
      "store" $store
      "auth" $auth
      "spawn" (dict "spawner" "kubernetes" "start_timeout" $su.startTimeout)
      "proxy" $proxy
      "cull" $cull
      "kube" $kube -}}
{{- if not $store -}}
{{- $_ := unset $config "store" -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $v.hub.extraConfig)) -}}
{{- end -}}

{{/* Every distinct workspace image: the default one and each profile's. */}}
{{- define "codehub.workspaceImages" -}}
{{- $images := list (include "codehub.workspaceImage" .) -}}
{{- range $name, $p := .Values.singleuser.profiles -}}
{{- if and (kindIs "map" $p) $p.image -}}
{{- $images = append $images $p.image -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $images) -}}
{{- end -}}
