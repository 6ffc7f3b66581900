// Customer Insights segments -> Klaviyo lists, on Azure Functions Flex Consumption.
// Deploy with `azd up`, or `az deployment group create -g <rg> -f infra/main.bicep -p environmentName=<name>`.
// Every resource is declared in a local module under modules/ (no registry modules), so the
// static checks in tests/test_infra.py see all of them.
targetScope = 'resourceGroup'

@description('Short name of this deployment (azd environment name); seeds resource names and tags.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Region for all resources; must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Object id of the deployer, granted Key Vault Secrets Officer so they can set the Klaviyo key. Empty: nobody.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Existing storage account holding the Customer Insights export. Empty: the template creates one.')
param segmentsStorageAccountName string = ''

@description('Resource group of the existing segments account. Empty: this resource group.')
param segmentsStorageResourceGroup string = ''

@description('Subscription id of the existing segments account. Empty: this subscription.')
param segmentsStorageSubscriptionId string = ''

@description('Container the Customer Insights export writes to (created when the template creates the account).')
@minLength(3)
@maxLength(63)
param segmentsContainerName string = 'customer-insights'

@description('Object id of the principal that writes segment files into a created account (e.g. the Customer Insights service principal). Empty: none.')
param segmentsWriterPrincipalId string = ''

@description('Container for export definitions, run records, reports and locks (STATE_CONTAINER).')
@minLength(3)
@maxLength(63)
param stateContainerName string = 'klaviyo-export'

@description('NCRONTAB schedule of the timer trigger (EXPORT_SCHEDULE), in UTC.')
param exportSchedule string = '0 */30 * * * *'

@description('Klaviyo API base URL (KLAVIYO_BASE_URL).')
param klaviyoBaseUrl string = 'https://a.klaviyo.com'

@description('Klaviyo API revision (KLAVIYO_REVISION).')
param klaviyoRevision string = '2026-07-15'

@description('Name of the Key Vault secret holding the Klaviyo private API key.')
param klaviyoApiKeySecretName string = 'klaviyo-api-key'

@description('Klaviyo private API key. Empty: leave the secret as it is (set it later with az keyvault secret set).')
@secure()
param klaviyoApiKey string = ''

@description('Seconds the app caches the key read from Key Vault (KEY_VAULT_CACHE_SECONDS).')
@minValue(0)
@maxValue(86400)
param keyVaultCacheSeconds int = 300

@description('Most instances the app may scale out to. Klaviyo rate limits are per account, so more instances do not export faster.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB. 512 is not offered: the exporter alone is sized for ~250 MB at 1M rows, beside the Functions host and the Python worker.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Application (client) id of the Entra ID app registration in front of the HTTP API (see README: Who may do what).')
@minLength(36)
@maxLength(36)
param authClientId string

@description('Tenant id of that app registration. Empty: the tenant of this deployment.')
param authTenantId string = ''

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var createSegmentsStorage = empty(segmentsStorageAccountName)
var segmentsAccountName = createSegmentsStorage ? 'stseg${resourceToken}' : segmentsStorageAccountName
var segmentsResourceGroup = (createSegmentsStorage || empty(segmentsStorageResourceGroup)) ? resourceGroup().name : segmentsStorageResourceGroup
var apiAuthTenantId = empty(authTenantId) ? tenant().tenantId : authTenantId
var segmentsSubscriptionId = (createSegmentsStorage || empty(segmentsStorageSubscriptionId)) ? subscription().subscriptionId : segmentsStorageSubscriptionId

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    appPrincipalId: identity.outputs.principalId
  }
}

module appStorage 'modules/app-storage.bicep' = {
  name: 'app-storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package'
    stateContainerName: stateContainerName
    appPrincipalId: identity.outputs.principalId
  }
}

module segmentsStorage 'modules/segments-storage.bicep' = if (createSegmentsStorage) {
  name: 'segments-storage'
  params: {
    name: segmentsAccountName
    location: location
    tags: tags
    containerName: segmentsContainerName
    writerPrincipalId: segmentsWriterPrincipalId
  }
}

// Deployed where the segments account lives: this resource group for a created account, the
// given resource group (and subscription) for an existing one.
module segmentsAccess 'modules/segments-access.bicep' = {
  name: 'segments-access-${resourceToken}'
  scope: resourceGroup(segmentsSubscriptionId, segmentsResourceGroup)
  params: {
    storageAccountName: segmentsAccountName
    containerName: segmentsContainerName
    appPrincipalId: identity.outputs.principalId
  }
  dependsOn: [
    segmentsStorage
  ]
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    klaviyoApiKeySecretName: klaviyoApiKeySecretName
    klaviyoApiKey: klaviyoApiKey
    secretsOfficerPrincipalId: principalId
    secretsOfficerPrincipalType: principalType
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    deploymentContainerUrl: appStorage.outputs.deploymentContainerUrl
    appStorageBlobServiceUri: appStorage.outputs.blobServiceUri
    appStorageQueueServiceUri: appStorage.outputs.queueServiceUri
    segmentsBlobServiceUri: segmentsAccess.outputs.blobServiceUri
    stateContainerName: appStorage.outputs.stateContainerName
    exportSchedule: exportSchedule
    keyVaultUrl: keyVault.outputs.uri
    keyVaultCacheSeconds: keyVaultCacheSeconds
    klaviyoBaseUrl: klaviyoBaseUrl
    klaviyoRevision: klaviyoRevision
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    authClientId: authClientId
    authTenantId: apiAuthTenantId
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output KLAVIYO_SECRET_NAME string = klaviyoApiKeySecretName
output APP_STORAGE_ACCOUNT_NAME string = appStorage.outputs.name
output SEGMENTS_STORAGE_ACCOUNT_NAME string = segmentsAccountName
output SEGMENTS_CONTAINER_NAME string = segmentsContainerName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AUTH_CLIENT_ID string = authClientId
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
