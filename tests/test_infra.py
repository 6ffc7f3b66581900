"""Static checks of infra/*.bicep: checkov's rules, then the project's own.

No Bicep compiler can be installed here, so two tools stand in for it, both from the checkov
venv (`make setup` builds it; CI passes its `checkov` in the CHECKOV environment variable):

- checkov scans every file; it must report no failed check and no parsing error (it exits 0
  on a file it cannot parse, so the summary is what counts), and every skip must be an inline
  `// checkov:skip=CKV_...: reason` comment that still silences a real finding.
- pycep (checkov's Bicep parser) turns each file into JSON, on which the tests below check
  what checkov does not know about this app: the function app carries exactly the settings the
  code reads (shared.settings.SETTING_NAMES), no setting can hold a key or a secure parameter,
  and every role the identity needs is assigned at the narrowest scope.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import SETTING_NAMES

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
CHECKOV_TIMEOUT = 600
PARSE_TIMEOUT = 300

# Settings the code can read that the Azure deployment deliberately leaves out, with why.
NOT_IN_AZURE = {
    "KLAVIYO_API_KEY": "local runs only; in Azure the key comes from Key Vault (KEY_VAULT_URL)",
    "API_AUTH_DISABLED": "local runs only; in Azure App Service authentication and app roles apply",
    "AzureWebJobsStorage": "connection-string form: Azure uses the identity-based __ settings",
    "SEGMENTS_STORAGE": "connection-string form: Azure uses the identity-based __ settings",
    "AzureWebJobsStorage__accountName": "the blob and queue service URIs are given instead",
    "SEGMENTS_STORAGE__accountName": "the blob service URI is given instead",
    "SEGMENTS_STORAGE__queueServiceUri": "the segment export is read through blobs only",
}
# Settings the platform reads (not the code): telemetry through the app's identity.
PLATFORM_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# What must never appear in a setting value (pycep spells `x.listKeys()` as a function_accessor).
SECRET_MARKERS = (
    "AccountKey",
    "SharedAccessSignature",
    "SharedAccessKey",
    "listKeys",
    "listAccountSas",
    "listServiceSas",
    "function_accessor",
    "list_func",
)

ROLE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
ROLE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
ROLE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ROLE_KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
ROLE_MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
ROLE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
ROLE_KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"

# Role the app identity must hold -> the resource type it must be scoped to (the narrowest).
REQUIRED_APP_ROLES = {
    ROLE_BLOB_DATA_OWNER: "Microsoft.Storage/storageAccounts",
    ROLE_QUEUE_DATA_CONTRIBUTOR: "Microsoft.Storage/storageAccounts",
    ROLE_BLOB_DATA_READER: "Microsoft.Storage/storageAccounts/blobServices/containers",
    ROLE_KEY_VAULT_SECRETS_USER: "Microsoft.KeyVault/vaults",
    ROLE_MONITORING_METRICS_PUBLISHER: "Microsoft.Insights/components",
}
# Optional grants to people or services other than the app (both conditional on a parameter).
OPTIONAL_ROLES = {
    ROLE_BLOB_DATA_CONTRIBUTOR: "Microsoft.Storage/storageAccounts/blobServices/containers",
    ROLE_KEY_VAULT_SECRETS_OFFICER: "Microsoft.KeyVault/vaults",
}
# Microsoft's "Flex Consumption plan deprecations" table, in the Functions app settings
# reference: https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations
# (read 2025-07, ms.date 07/11/2025). Flex rejects or ignores these; a site property such as
# ftpsState fails the deployment outright (ARM error 51021). The table writes them as
# `properties.<name>`; most live in siteConfig, a few on the site itself, so both are checked.
FLEX_DEPRECATED_PROPERTIES = (
    "alwaysOn",
    "containerSize",
    "ftpsState",
    "isReserved",
    "IsXenon",
    "javaVersion",
    "LinuxFxVersion",
    "netFrameworkVersion",
    "powerShellVersion",
    "functionAppScaleLimit",
    "preWarmedInstanceCount",
    "use32BitWorkerProcess",
    "vnetBackupRestoreEnabled",
    "vnetContentShareEnabled",
    "vnetImagePullEnabled",
    "vnetRouteAllEnabled",
    "windowsFxVersion",
)
FLEX_DEPRECATED_APP_SETTINGS = (
    "ENABLE_ORYX_BUILD",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
)
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SKIP_COMMENT = re.compile(r"checkov:skip=([A-Z0-9_]+)(.*)")
SKIP_COMMENT_FORM = re.compile(r"^\s*// checkov:skip=CKV2?_[A-Z]+_\d+: \S.{9,}$")

# Runs in the checkov venv, where pycep lives: parses each file given and prints JSON.
PARSE_SCRIPT = """
import json, sys
from importlib.metadata import version
from pathlib import Path
from pycep import BicepParser

parser = BicepParser(add_line_numbers=True)
out = {"pycep_version": version("pycep-parser"), "files": {}, "errors": {}}
for name in sys.argv[1:]:
    try:
        out["files"][name] = parser.parse(file_path=Path(name))
    except Exception as exc:
        out["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
print(json.dumps(out, default=str))
"""


# -- tools -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov() -> Path:
    value = os.environ.get("CHECKOV", "")
    if not value:
        pytest.fail(
            "CHECKOV is not set: run `make test`, or set CHECKOV to .venv-checkov/bin/checkov "
            "(python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -r "
            "requirements-checkov.txt)"
        )
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"CHECKOV={value} is not an executable file")
    return path


@pytest.fixture(scope="module")
def checkov_reports(checkov: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(checkov), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    reports = data if isinstance(data, list) else [data]
    assert reports, "checkov returned an empty report list"
    return reports


@pytest.fixture(scope="module")
def parsed(checkov: Path) -> dict[str, Any]:
    """pycep's JSON for every Bicep file, keyed by path relative to infra/."""
    python = checkov.parent / "python"
    proc = subprocess.run(
        [str(python), "-c", PARSE_SCRIPT, *(str(f.relative_to(INFRA)) for f in BICEP_FILES)],
        capture_output=True,
        text=True,
        timeout=PARSE_TIMEOUT,
        cwd=INFRA,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"pycep run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def files(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if parsed["errors"]:
        pytest.fail(f"pycep {parsed['pycep_version']} cannot parse: {parsed['errors']}")
    return parsed["files"]


# -- helpers over pycep's JSON ---------------------------------------------------------------


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's properties; `= if (cond) {...}` nests them one level down."""
    config = resource["config"]
    return config["config"] if "condition" in config else config


def is_conditional(resource: dict[str, Any]) -> bool:
    return "condition" in resource["config"]


def render(node: Any) -> str:
    """`a.b.c` / `a::b::c` from pycep's accessor trees; identifiers come as bare strings."""
    if isinstance(node, dict) and "operator" in node:
        op = node["operator"]
        sep = {"property_accessor": ".", "nested_resource_accessor": "::"}.get(op["type"])
        if sep:
            return render(op["operands"]["operand_1"]) + sep + render(op["operands"]["operand_2"])
    if isinstance(node, str):
        return node
    return json.dumps(node, sort_keys=True)


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_strings(value)


def references(node: Any, names: set[str]) -> set[str]:
    """Which of `names` (parameters) an expression uses, bare or inside '${...}'."""
    found = set()
    for text in walk_strings(node):
        for name in names:
            if text == name or re.search(rf"\$\{{[^}}]*\b{re.escape(name)}\b", text):
                found.add(name)
    return found


def secure_params(doc: dict[str, Any]) -> set[str]:
    return {
        name
        for name, param in doc.get("parameters", {}).items()
        if any(d.get("type") == "secure" for d in param.get("decorators", []))
    }


def resources_of(files: dict[str, dict[str, Any]], rtype: str) -> list[tuple[str, str, dict]]:
    return [
        (path, name, resource)
        for path, doc in files.items()
        for name, resource in doc.get("resources", {}).items()
        if resource["type"].lower() == rtype.lower() and not resource.get("existing")
    ]


def only(found: list[tuple[str, str, dict]], what: str) -> tuple[str, str, dict]:
    assert len(found) == 1, f"expected one {what}, found {[(p, n) for p, n, _ in found]}"
    return found[0]


def function_app(files: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    sites = [
        (path, resource)
        for path, _, resource in resources_of(files, "Microsoft.Web/sites")
        if "functionapp" in str(body(resource).get("kind", ""))
    ]
    assert len(sites) == 1, f"expected one function app, found {len(sites)}"
    return sites[0]


def app_settings(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _, site = function_app(files)
    entries = body(site)["properties"]["siteConfig"]["appSettings"]
    assert isinstance(entries, list), "appSettings must be a literal list of {name, value}"
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {entry["name"]: entry["value"] for entry in entries}


def role_assignments(files: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each assignment with its role GUID and the type of the resource it is scoped to."""
    found = []
    for path, name, resource in resources_of(files, "Microsoft.Authorization/roleAssignments"):
        config = body(resource)
        roles = GUID.findall(json.dumps(config["properties"]["roleDefinitionId"]))
        assert len(roles) == 1, f"{path}:{name}: role definition id must be a literal GUID"
        scope = render(config.get("scope", ""))
        target = files[path]["resources"].get(scope.replace("::", "__"))
        found.append(
            {
                "where": f"{path}:{name}",
                "path": path,
                "start_line": resource["__start_line__"],
                "role": roles[0],
                "scope_type": target["type"] if target else None,
                "principal": render(config["properties"].get("principalId")),
                "principal_type": config["properties"].get("principalType"),
                "conditional": is_conditional(resource),
            }
        )
    return found


def module_calls(files: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict, str]]:
    """(calling file, module symbol, module, called file) for every module call."""
    for path, doc in files.items():
        for name, module in doc.get("modules", {}).items():
            target = (INFRA / path).parent / module["detail"]["path"]
            yield path, name, module, str(target.resolve().relative_to(INFRA))


# -- checkov ---------------------------------------------------------------------------------


def test_checkov_scans_every_file_with_no_failure_or_parsing_error(checkov_reports):
    for report in checkov_reports:
        summary = report["summary"]
        unparsed = report.get("results", {}).get("parsing_errors", [])
        assert summary["parsing_errors"] == 0, f"checkov could not parse: {unparsed}"
        failed = [
            f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
            for c in report.get("results", {}).get("failed_checks", [])
        ]
        assert summary["failed"] == 0, "checkov failed checks:\n" + "\n".join(failed)
    assert sum(r["summary"]["passed"] for r in checkov_reports) > 0, "checkov checked nothing"
    assert sum(r["summary"]["resource_count"] for r in checkov_reports) > 0


def test_every_checkov_skip_is_inline_with_a_reason_and_still_needed(checkov_reports):
    declared = set()
    for path in BICEP_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if match:
                where = f"{path.relative_to(INFRA)}:{number}"
                assert SKIP_COMMENT_FORM.match(line), f"{where}: write `// checkov:skip=ID: reason`"
                declared.add((f"/{path.relative_to(INFRA)}", match.group(1)))
    skipped = set()
    for report in checkov_reports:
        for check in report.get("results", {}).get("skipped_checks", []):
            reason = check.get("check_result", {}).get("suppress_comment", "")
            assert reason and reason != "No comment provided", f"skip without reason: {check}"
            skipped.add((check["file_path"], check["check_id"]))
    assert skipped <= declared, f"skips without an inline comment: {sorted(skipped - declared)}"
    assert declared <= skipped, f"stale skips (nothing to silence): {sorted(declared - skipped)}"


# -- parsing and structure -------------------------------------------------------------------


def test_pycep_parses_every_bicep_file(parsed):
    assert BICEP_FILES, "no Bicep files under infra/"
    assert not parsed["errors"], f"pycep {parsed['pycep_version']} cannot parse: {parsed['errors']}"
    assert set(parsed["files"]) == {str(f.relative_to(INFRA)) for f in BICEP_FILES}


def test_modules_are_local_files_so_checkov_sees_every_resource(files):
    calls = list(module_calls(files))
    assert calls, "main.bicep declares its resources in local modules"
    for path, name, module, target in module_calls(files):
        assert module["type"] == "local", f"{path}:{name} uses a registry module"
        assert target in files, f"{path}:{name} points at {target}, which is not under infra/"


def test_main_outputs_app_name_url_and_key_vault_name(files):
    outputs = files["main.bicep"]["outputs"]
    assert "FUNCTION_APP_NAME" in outputs
    assert outputs["FUNCTION_APP_URL"]["value"].startswith("https://")
    assert "KEY_VAULT_NAME" in outputs
    for name, output in outputs.items():
        assert not references(output, secure_params(files["main.bicep"])), name


# -- app settings ----------------------------------------------------------------------------


def test_allow_list_names_only_settings_the_code_reads():
    assert set(NOT_IN_AZURE) <= set(SETTING_NAMES), set(NOT_IN_AZURE) - set(SETTING_NAMES)


def test_function_app_carries_exactly_the_settings_the_code_reads(files):
    expected = (set(SETTING_NAMES) - set(NOT_IN_AZURE)) | PLATFORM_SETTINGS
    actual = set(app_settings(files))
    assert not expected - actual, f"settings the code reads but Azure lacks: {expected - actual}"
    assert not actual - expected, f"settings nothing reads: {actual - expected}"


def test_klaviyo_api_key_is_not_an_app_setting(files):
    assert "KLAVIYO_API_KEY" not in app_settings(files)


def test_the_role_check_is_never_switched_off_in_azure(files):
    settings = {name.upper() for name in app_settings(files)}
    assert "API_AUTH_DISABLED" not in settings
    for path in BICEP_FILES:
        assert "API_AUTH_DISABLED" not in path.read_text(), path


def test_connections_are_identity_based(files):
    settings = app_settings(files)
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["SEGMENTS_STORAGE__credential"] == "managedidentity"
    for prefix in ("AzureWebJobsStorage", "SEGMENTS_STORAGE"):
        assert settings[f"{prefix}__clientId"] == settings["AZURE_CLIENT_ID"]
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert re.fullmatch(r"ClientId=\$\{\w+\};Authorization=AAD", auth), auth


def test_no_setting_holds_a_key_or_a_secure_parameter(files):
    path, _ = function_app(files)
    secure = secure_params(files[path])
    for name, value in app_settings(files).items():
        text = json.dumps(value)
        for marker in SECRET_MARKERS:
            assert marker not in text, f"{name} looks like it holds a secret ({marker})"
        assert not references(value, secure), f"{name} uses a secure parameter"


def test_secure_values_flow_only_into_secure_parameters(files):
    """A @secure() value may be passed on only to a @secure() parameter of the module called."""
    for path, name, module, target in module_calls(files):
        secure_here = secure_params(files[path])
        secure_there = secure_params(files[target])
        for param, value in body(module).get("params", {}).items():
            if references(value, secure_here):
                assert param in secure_there, f"{path}:{name} passes a secret into {param}"


def test_no_bicep_file_reads_keys_or_builds_connection_strings():
    for path in BICEP_FILES:
        text = path.read_text()
        for marker in ("listKeys(", "AccountKey=", "SharedAccessSignature", "listAccountSas("):
            assert marker not in text, f"{path.relative_to(INFRA)} contains {marker}"


# -- roles -----------------------------------------------------------------------------------


def test_app_identity_holds_each_required_role_at_the_narrowest_scope(files):
    assignments = role_assignments(files)
    for role, scope_type in REQUIRED_APP_ROLES.items():
        matching = [a for a in assignments if a["role"] == role]
        assert matching, f"no assignment of role {role}"
        for assignment in matching:
            assert assignment["scope_type"] == scope_type, assignment
            assert assignment["principal"] == "appPrincipalId", assignment
            assert assignment["principal_type"] == "ServicePrincipal", assignment
            assert not assignment["conditional"], f"{assignment['where']} must always deploy"


def test_every_assignment_is_a_known_narrow_role_on_a_resource(files):
    allowed = REQUIRED_APP_ROLES | OPTIONAL_ROLES
    for assignment in role_assignments(files):
        assert assignment["role"] in allowed, f"unexpected role in {assignment['where']}"
        assert assignment["scope_type"] == allowed[assignment["role"]], assignment
        if assignment["role"] in OPTIONAL_ROLES:
            assert assignment["conditional"], f"{assignment['where']} must be optional"


def test_every_assignment_names_its_role_id_in_a_comment_above_it(files):
    for assignment in role_assignments(files):
        lines = (INFRA / assignment["path"]).read_text().splitlines()
        above = []
        for line in reversed(lines[: assignment["start_line"] - 1]):
            if not line.lstrip().startswith("//"):
                break
            above.append(line)
        assert assignment["role"] in "\n".join(above), f"{assignment['where']}: name the role id"


def test_app_identity_is_wired_into_every_module_that_grants_it_a_role(files):
    calls = {target: body(module) for _, _, module, target in module_calls(files)}
    granting = {a["path"] for a in role_assignments(files) if a["principal"] == "appPrincipalId"}
    for path in granting:
        assert path in calls, f"{path} is never deployed"
        assert render(calls[path]["params"]["appPrincipalId"]) == "identity.outputs.principalId"


# -- resource properties ---------------------------------------------------------------------


def test_function_app_runs_on_flex_consumption_python(files):
    _, _, plan = only(resources_of(files, "Microsoft.Web/serverfarms"), "plan")
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(plan)["properties"]["reserved"] is True

    path, site = function_app(files)
    config = body(site)
    assert config["kind"] == "functionapp,linux"
    assert config["identity"]["type"] == "UserAssigned"
    flex = config["properties"]["functionAppConfig"]
    assert flex["runtime"]["name"] == "python"
    version = flex["runtime"]["version"]
    if version in files[path]["parameters"]:  # a parameter: pin its default and allowed values
        param = files[path]["parameters"][version]
        allowed = [d["argument"] for d in param["decorators"] if d["type"] == "allowed"]
        assert param["default"] == "3.11" and allowed in ([], [["3.11"]]), param
    else:
        assert version == "3.11"
    storage = flex["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert {"maximumInstanceCount", "instanceMemoryMB"} <= set(flex["scaleAndConcurrency"])


def test_function_app_is_https_only_tls12_and_without_basic_publishing(files):
    _, site = function_app(files)
    properties = body(site)["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    # FTP stays off through the credential policies: Flex refuses siteConfig.ftpsState.
    policies = {
        body(r)["name"]: body(r)["properties"]["allow"]
        for _, _, r in resources_of(files, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    }
    assert policies == {"ftp": False, "scm": False}


def test_storage_accounts_take_identity_only(files):
    accounts = resources_of(files, "Microsoft.Storage/storageAccounts")
    assert len(accounts) >= 2, "the app's account and the optional segments account"
    for path, name, account in accounts:
        properties = body(account)["properties"]
        assert properties["allowSharedKeyAccess"] is False, f"{path}:{name}"
        assert properties["allowBlobPublicAccess"] is False, f"{path}:{name}"
        assert properties["minimumTlsVersion"] == "TLS1_2", f"{path}:{name}"
        assert properties["supportsHttpsTrafficOnly"] is True, f"{path}:{name}"


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection(files):
    _, _, vault = only(resources_of(files, "Microsoft.KeyVault/vaults"), "key vault")
    properties = body(vault)["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert "accessPolicies" not in properties


def test_application_insights_takes_entra_id_only_and_logs_to_a_workspace(files):
    _, _, component = only(resources_of(files, "Microsoft.Insights/components"), "App Insights")
    properties = body(component)["properties"]
    assert properties["DisableLocalAuth"] is True
    assert properties.get("WorkspaceResourceId")
    only(resources_of(files, "Microsoft.OperationalInsights/workspaces"), "workspace")


def test_app_storage_declares_the_state_container_and_run_queues(files):
    containers = {
        body(r)["name"]
        for _, _, r in resources_of(
            files, "Microsoft.Storage/storageAccounts/blobServices/containers"
        )
    }
    assert "stateContainerName" in containers
    queues = {
        body(r)["name"]
        for _, _, r in resources_of(files, "Microsoft.Storage/storageAccounts/queueServices/queues")
    }
    assert queues == {"runQueueName", "${runQueueName}-poison"}
    params = files["modules/app-storage.bicep"]["parameters"]
    assert params["runQueueName"]["default"] == "export-runs"


# -- Flex Consumption ------------------------------------------------------------------------


def test_no_property_or_app_setting_from_the_flex_deprecation_list_is_set(files):
    _, site = function_app(files)
    properties = body(site)["properties"]
    deprecated = {name.lower() for name in FLEX_DEPRECATED_PROPERTIES}
    for where, block in (("properties", properties), ("siteConfig", properties["siteConfig"])):
        found = sorted(key for key in block if key.lower() in deprecated)
        assert not found, f"Flex Consumption refuses {where}: {found}"
    settings = {name.upper() for name in app_settings(files)}
    assert not settings & set(FLEX_DEPRECATED_APP_SETTINGS), settings & set(
        FLEX_DEPRECATED_APP_SETTINGS
    )


def test_the_deprecation_check_would_catch_ftps_state():
    # The list above must hold the property that broke `azd up` (ARM error 51021).
    assert "ftpsState" in FLEX_DEPRECATED_PROPERTIES
    assert "FUNCTIONS_WORKER_RUNTIME" in FLEX_DEPRECATED_APP_SETTINGS


def test_instance_memory_leaves_out_512_mb(files):
    for path in ("main.bicep", "modules/function-app.bicep"):
        param = files[path]["parameters"]["instanceMemoryMB"]
        allowed = next(d["argument"] for d in param["decorators"] if d["type"] == "allowed")
        assert allowed == [2048, 4096], f"{path}: {allowed}"
        assert param["default"] == 2048, path


# -- App Service authentication (Entra ID) in front of the HTTP API ----------------------------


def auth_settings(files: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    found = [
        (path, body(resource))
        for path, _, resource in resources_of(files, "Microsoft.Web/sites/config")
        if body(resource)["name"] == "authsettingsV2"
    ]
    assert len(found) == 1, f"expected one authsettingsV2, found {len(found)}"
    return found[0]


def test_entra_id_authentication_is_required_on_the_function_app(files):
    path, auth = auth_settings(files)
    site_path, _ = function_app(files)
    assert path == site_path
    site_symbol = next(
        name
        for name, r in files[path]["resources"].items()
        if r["type"] == "Microsoft.Web/sites" and not r.get("existing")
    )
    assert auth["parent"] == site_symbol
    properties = auth["properties"]
    assert properties["platform"]["enabled"] is True
    assert properties["globalValidation"]["requireAuthentication"] is True
    # An API answers 401, never a redirect to a login page.
    assert properties["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    assert properties["httpSettings"]["requireHttps"] is True
    aad = properties["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True
    assert aad["registration"]["clientId"] == "authClientId"
    issuer = aad["registration"]["openIdIssuer"]
    assert issuer.endswith("${authTenantId}/v2.0"), issuer
    assert "loginEndpoint" in issuer, "use environment().authentication, not a literal cloud"
    assert set(aad["validation"]["allowedAudiences"]) == {"authClientId", "api://${authClientId}"}
    assert "clientSecretSettingName" not in aad["registration"], "an API needs no client secret"


def test_auth_client_and_tenant_are_deployment_parameters(files):
    main = files["main.bicep"]
    assert main["parameters"]["authClientId"]["default"] is None, "required: no default"
    assert "authTenantId" in main["parameters"]
    calls = {target: body(module) for _, _, module, target in module_calls(files)}
    params = calls["modules/function-app.bicep"]["params"]
    assert render(params["authClientId"]) == "authClientId"
    assert render(params["authTenantId"]) == "apiAuthTenantId"
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["authClientId"]["value"] == "${AUTH_CLIENT_ID}"
    assert mapped["authTenantId"]["value"] == "${AUTH_TENANT_ID=}"


def test_function_keys_stay_required_behind_entra_id():
    text = (ROOT / "function_app.py").read_text()
    assert "http_auth_level=func.AuthLevel.FUNCTION" in text


def test_azd_builds_the_python_package_remotely():
    # azure.yaml schema: services.<name>.remoteBuild (a boolean) for `host: function`. Read
    # without a YAML library (none is a dependency): the service block is plain key: value.
    lines = (ROOT / "azure.yaml").read_text().splitlines()
    start = lines.index("  api:")
    block = {}
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        key, _, value = line.strip().partition(":")
        block[key] = value.strip()
    assert block["host"] == "function" and block["language"] == "python"
    assert block["remoteBuild"] == "true"
