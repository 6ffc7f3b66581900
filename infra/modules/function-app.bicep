// The function app on a Flex Consumption (FC1) plan: Linux, Python, deployed from a blob
// container, running as the user-assigned identity. App settings are exactly those the code
// reads (shared/settings.py SETTING_NAMES) plus the two Application Insights settings; every
// connection is identity-based, so no setting holds a key, a SAS or a storage connection string.

@description('Name of the function app (globally unique host name).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region.')
param location string

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('Python version the code is tested on.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Most instances the app may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB. 512 is not offered: the exporter alone is sized for ~250 MB at 1M rows, beside the Functions host and the Python worker.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('URL of the blob container the app package is deployed to.')
param deploymentContainerUrl string

@description('Blob service URI of the app storage account (AzureWebJobsStorage).')
param appStorageBlobServiceUri string

@description('Queue service URI of the app storage account (AzureWebJobsStorage).')
param appStorageQueueServiceUri string

@description('Blob service URI of the account holding the segment export (SEGMENTS_STORAGE).')
param segmentsBlobServiceUri string

@description('Container for definitions, run records, reports and locks (STATE_CONTAINER).')
param stateContainerName string

@description('NCRONTAB schedule of the timer trigger (EXPORT_SCHEDULE).')
param exportSchedule string

@description('URL of the Key Vault holding the Klaviyo key (KEY_VAULT_URL).')
param keyVaultUrl string

@description('Seconds a secret read from Key Vault is cached (KEY_VAULT_CACHE_SECONDS).')
param keyVaultCacheSeconds int

@description('Klaviyo API base URL (KLAVIYO_BASE_URL).')
param klaviyoBaseUrl string

@description('Klaviyo API revision (KLAVIYO_REVISION).')
param klaviyoRevision string

@description('Application Insights connection string (not a secret: ingestion requires Entra ID).')
param applicationInsightsConnectionString string

@description('Application (client) id of the Entra ID app registration that fronts the HTTP API (App Service authentication).')
@minLength(36)
@maxLength(36)
param authClientId string

@description('Tenant id of that app registration.')
@minLength(36)
@maxLength(36)
param authTenantId string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption needs always-ready instances (billed while idle); exports are batch work that retries
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed instance count (numberOfWorkers); it scales per function from zero
  // checkov:skip=CKV_AZURE_213: Flex Consumption instances are platform-managed and scale to zero; there is no instance pool for a health check to evict from
  // checkov:skip=CKV_AZURE_222: the HTTP triggers (on-demand runs) are called from outside Azure; each call needs a function key, and no VNet is deployed
  // checkov:skip=CKV_AZURE_17: callers authenticate with Entra ID (authsettingsV2 below) and a function key; a client certificate on top would add no new check
  // checkov:skip=CKV_AZURE_78: Flex Consumption rejects siteConfig.ftpsState (ARM error 51021, FTPS not supported); FTP is off anyway: basic publishing credentials are disabled below
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: appStorageBlobServiceUri
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: appStorageQueueServiceUri
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'SEGMENTS_STORAGE__blobServiceUri'
          value: segmentsBlobServiceUri
        }
        {
          name: 'SEGMENTS_STORAGE__credential'
          value: 'managedidentity'
        }
        {
          name: 'SEGMENTS_STORAGE__clientId'
          value: identityClientId
        }
        {
          name: 'STATE_CONTAINER'
          value: stateContainerName
        }
        {
          name: 'EXPORT_SCHEDULE'
          value: exportSchedule
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUrl
        }
        {
          name: 'KEY_VAULT_CACHE_SECONDS'
          value: string(keyVaultCacheSeconds)
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'KLAVIYO_BASE_URL'
          value: klaviyoBaseUrl
        }
        {
          name: 'KLAVIYO_REVISION'
          value: klaviyoRevision
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// App Service authentication (Easy Auth) in front of the HTTP API: every request needs an
// Entra ID access token for the app registration, or it is answered 401 before it reaches
// the code. The app then reads the caller's app roles (Exports.Admin, Exports.Contributor)
// from the X-MS-CLIENT-PRINCIPAL header the platform injects; function keys stay required.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov reads only v1 authsettings (properties.enabled); this authsettingsV2 turns Entra ID on with platform.enabled and requireAuthentication (tests/test_infra.py checks both)
  // checkov:skip=CKV_AZURE_63: HTTP logging is a 'web' config property; this config resource holds authentication settings only
  // checkov:skip=CKV_AZURE_65: detailed error messages are a 'web' config property; this config resource holds authentication settings only
  // checkov:skip=CKV_AZURE_66: failed request tracing is a 'web' config property; this config resource holds authentication settings only
  // checkov:skip=CKV_AZURE_80: .NET Framework version is a 'web' config property (and this is a Python app); this resource holds authentication settings only
  // checkov:skip=CKV_AZURE_88: Azure Files mounts are an 'azurestorageaccounts' config; Flex Consumption runs from its blob deployment container
  // checkov:skip=CKV_AZURE_222: public network access is a site property (set and explained on the site above), not an authsettingsV2 field
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

// Basic (user/password) publishing credentials off for both FTP and SCM: deployments
// authenticate with Entra ID (azd / az functionapp deploy).
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
