// A storage account + container for the Customer Insights segment export, created when no
// existing account is given. Identity-only like the app's own account: Customer Insights must
// connect with its service principal (shared keys are off); writerPrincipalId grants it write
// access to the container. Read access for the app is granted by segments-access.bicep.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Container Customer Insights exports segments into.')
param containerName string

@description('Object id of the principal that writes segment files (e.g. the Customer Insights service principal). Empty: none.')
param writerPrincipalId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Customer Insights and the Flex Consumption app both reach it over the public endpoint; every request needs an Entra ID token (shared keys are off)
  // checkov:skip=CKV_AZURE_59: the public endpoint is needed for the same reason; anonymous and key access are both off
  // checkov:skip=CKV_AZURE_206: a copy of what Customer Insights exports again on its next refresh; geo-replication buys nothing
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    // Data Lake Gen2 namespace: Customer Insights connects to storage with its service principal
    // only on such accounts. The app reads through the Blob API, which works the same on them.
    isHnsEnabled: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

// Storage Blob Data Contributor (ba92f5b4-2d11-453d-a403-e96b0029c9fe) on the segment container
// only, for whoever writes the export (optional): write access, nothing outside the container.
resource writer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(writerPrincipalId)) {
  name: guid(container.id, writerPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: writerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = storage.name
output containerName string = container.name
