"""The catalog of auditable actions: the single source of which actions exist and their Type.

Taken verbatim from the product doc's "List of Auditable Events" (48 actions). Routing, the
Great Expectations suite, the generator and the Airflow trigger form all read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

ACTIONS: Mapping[str, str] = MappingProxyType(
    {
        "LinkOrganizationToAwsMarketplace": "AWS Marketplace",
        "CancelAwsMarketplaceSubscription": "AWS Marketplace",
        "CreateApiKeyCredential": "Credential",
        "GenerateIngestCredentials": "Credential",
        "RevokeApiKeyCredential": "Credential",
        "UpdateApiKeyCredential": "Credential",
        "CreateDirectory": "File modifications",
        "DeleteFile": "File modifications",
        "DeleteDirectory": "File modifications",
        "DownloadFile": "File modifications",
        "RenameFile": "File modifications",
        "UploadFile": "File modifications",
        "GenerateUploadUrl": "File modifications",
        "CreateStorageIntegration": "Storage Integration",
        "DeleteStorageIntegration": "Storage Integration",
        "CancelJobRun": "Job Run",
        "CreateJobRun": "Job Run",
        "GetJobRunLogs": "Job Run",
        "CreateNotebook": "Notebook",
        "DestroyNotebook": "Notebook",
        "RegisterOrganization": "Organizational Modification",
        "RegisterSamlUser": "Organizational Modification",
        "RegisterUser": "Organizational Modification",
        "InviteUser": "Organization Settings",
        "DeleteInvite": "Organization Settings",
        "DeleteUser": "Organization Settings",
        "UpdateOrganizationDefaultDomain": "Organization Settings",
        "UpdateOrganizationDefaultEnvironmentOverridePreset": "Organization Settings",
        "UpdateOrganizationDefaultEnvironmentPreset": "Organization Settings",
        "UpdateOrganizationDefaultRuntime": "Organization Settings",
        "UpdateOrganizationDefaultRegion": "Organization Settings",
        "UpdateSamlConfiguration": "Organization Settings",
        "DeleteSamlConfiguration": "Organization Settings",
        "UpdateUserRole": "Organization Settings",
        "CreateManagedCatalogTable": "Managed Catalog",
        "DeleteManagedCatalogTable": "Managed Catalog",
        "RenameManagedCatalogTable": "Managed Catalog",
        "UpdateManagedCatalogTable": "Managed Catalog",
        "CreateManagedCatalog": "Managed Catalog",
        "CreateForeignCatalog": "Foreign Catalog",
        "UpdateForeignCatalog": "Foreign Catalog",
        "DeleteForeignCatalog": "Foreign Catalog",
        "CreateSqlSession": "SQL Session",
        "DestroySqlSession": "SQL Session",
        "DeleteEnvironmentOverridePresetRuntime": "Runtime",
        "DeleteEnvironmentPresetRuntime": "Runtime",
        "SaveEnvironmentOverridePresetRuntime": "Runtime",
        "SaveEnvironmentPresetRuntime": "Runtime",
    }
)
"""Action name -> action Type, in the product doc's order. Names are case-sensitive."""

ACTION_TYPES: tuple[str, ...] = tuple(dict.fromkeys(ACTIONS.values()))
"""The distinct action Types, in catalog order."""


def action_type(action: str) -> str:
    """The catalog Type of ``action``; KeyError for an action that is not in the catalog."""
    return ACTIONS[action]
