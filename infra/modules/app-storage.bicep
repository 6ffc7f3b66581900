// The app's own storage account: Functions host state (AzureWebJobsStorage), the deployment
// package container Flex Consumption runs from, the state container (export definitions, run
// records, reports, blob-lease locks) and the export-runs queue with its poison queue.
// Identity-only: shared key access is off, so no account key or connection string exists to leak.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Container the app keeps definitions, run records, reports and locks in (STATE_CONTAINER).')
param stateContainerName string

@description('Queue that on-demand runs are posted to (read by the queue trigger).')
param runQueueName string = 'export-runs'

@description('Principal id of the app identity.')
param appPrincipalId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration calls storage from changing outbound IPs; every request needs an Entra ID token (shared keys are off)
  // checkov:skip=CKV_AZURE_59: the public endpoint is needed for the same reason; anonymous and key access are both off
  // checkov:skip=CKV_AZURE_206: holds the app package and run state, both rebuilt by the next deployment or run; geo-replication buys nothing
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
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
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource runQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: runQueueName
}

// Declared so that it exists (and can be watched) before the first failed message lands in it.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${runQueueName}-poison'
}

// Storage Blob Data Owner (b7e6dc6d-f1e8-4753-8033-0f276bb0955b) on this account: the Functions
// host needs Owner (not Contributor) for AzureWebJobsStorage identity connections (its lease and
// secret containers), Flex Consumption reads the package from the deployment container, and the
// app keeps its state container here. The account holds nothing else.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor (974c5e8b-45b9-4653-ba55-5f855dd0fb88) on this account: the HTTP
// trigger posts to export-runs, the queue trigger reads and deletes, the host moves failures to
// export-runs-poison. No other queues live in this account.
resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = storage.name
output blobServiceUri string = 'https://${storage.name}.blob.${environment().suffixes.storage}'
output queueServiceUri string = 'https://${storage.name}.queue.${environment().suffixes.storage}'
output deploymentContainerUrl string = 'https://${storage.name}.blob.${environment().suffixes.storage}/${deploymentContainer.name}'
output stateContainerName string = stateContainer.name
