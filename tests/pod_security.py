"""The Pod Security Standards' `restricted` profile as a function over a pod spec, for manifests
checked without a cluster (tests/test_deploy.py).

Written from the standard (kubernetes.io/docs/concepts/security/pod-security-standards, policy
version "latest" as of Kubernetes v1.33): `restricted` is every `baseline` control plus its own.
Each violation names the control as the standard does. Windows-only fields are checked too,
since a Linux pod that sets them is refused all the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Baseline "Capabilities": what a container may add (restricted narrows it to NET_BIND_SERVICE).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted "Volume Types": every other source (hostPath, nfs, iscsi, ...) is refused.
RESTRICTED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SECURE_SECCOMP = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def pod_templates(resource: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(metadata, spec) of every pod a resource creates: a Pod, a workload's template, a CronJob's."""
    kind = resource.get("kind")
    spec = resource.get("spec") or {}
    if kind == "Pod":
        yield resource.get("metadata") or {}, spec
    elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}:
        template = spec.get("template") or {}
        yield template.get("metadata") or {}, template.get("spec") or {}
    elif kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        yield template.get("metadata") or {}, template.get("spec") or {}


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def _baseline(metadata: dict[str, Any], spec: dict[str, Any]) -> Iterator[str]:
    pod_sc = spec.get("securityContext") or {}
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        yield "HostProcess: the pod is a Windows host process"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"Host Namespaces: {field} is true"
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            yield f"HostPath Volumes: volume {volume.get('name')} is a hostPath"
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or str(value).startswith("localhost/")
        ):
            yield f"AppArmor: annotation {key} is {value}"
    yield from _apparmor("pod", pod_sc)
    yield from _selinux("pod", pod_sc)
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield "Seccomp: the pod's seccompProfile is Unconfined"
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"Sysctls: {sysctl.get('name')} is not a safe sysctl"
    for container in containers(spec):
        name = f"container {container.get('name')}"
        sc = container.get("securityContext") or {}
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            yield f"HostProcess: {name} is a Windows host process"
        if sc.get("privileged"):
            yield f"Privileged Containers: {name} is privileged"
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            yield f"Capabilities: {name} adds {sorted(added - BASELINE_CAPABILITIES)}"
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield f"Host Ports: {name} uses host port {port['hostPort']}"
        yield from _apparmor(name, sc)
        yield from _selinux(name, sc)
        if sc.get("procMount") not in (None, "Default"):
            yield f"/proc Mount Type: {name} has procMount {sc['procMount']}"
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"Seccomp: {name}'s seccompProfile is Unconfined"


def _apparmor(who: str, sc: dict[str, Any]) -> Iterator[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    if kind is not None and kind not in SECURE_SECCOMP:
        yield f"AppArmor: {who} has appArmorProfile {kind}"


def _selinux(who: str, sc: dict[str, Any]) -> Iterator[str]:
    options = sc.get("seLinuxOptions") or {}
    if options.get("type", "") not in SELINUX_TYPES:
        yield f"SELinux: {who} has SELinux type {options['type']}"
    for field in ("user", "role"):
        if options.get(field):
            yield f"SELinux: {who} sets the SELinux {field}"


def _restricted(spec: dict[str, Any]) -> Iterator[str]:
    for volume in spec.get("volumes") or []:
        other = set(volume) - {"name"} - RESTRICTED_VOLUME_SOURCES
        if other:
            yield f"Volume Types: volume {volume.get('name')} is {sorted(other)}"
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        yield "Running as Non-root user: the pod's runAsUser is 0"
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    for container in containers(spec):
        name = f"container {container.get('name')}"
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"Privilege Escalation: {name} does not set allowPrivilegeEscalation to false"
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            yield f"Running as Non-root: neither {name} nor the pod sets runAsNonRoot to true"
        if sc.get("runAsUser") == 0:
            yield f"Running as Non-root user: {name}'s runAsUser is 0"
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECURE_SECCOMP:
            yield f"Seccomp: neither {name} nor the pod sets seccompProfile RuntimeDefault or Localhost"
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"Capabilities: {name} does not drop ALL"
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            yield f"Capabilities: {name} adds {sorted(added)} (only NET_BIND_SERVICE is allowed)"


def restricted_violations(metadata: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Every way this pod breaks the `restricted` profile; empty when it would be admitted."""
    return [*_baseline(metadata, spec), *_restricted(spec)]
