// Read-only access for the app to the segment container, wherever it lives: main.bicep deploys
// this module at the resource group (and subscription) of the segments account, so an existing
// account in another resource group works the same as the one the template creates.

@description('Name of the storage account holding the segment export.')
param storageAccountName string

@description('Container holding the segment export.')
param containerName string

@description('Principal id of the app identity.')
param appPrincipalId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource container 'containers' existing = {
      name: containerName
    }
  }
}

// Storage Blob Data Reader (2a2b9908-6ea1-4ae2-8e65-a410df84e7d1) on the segment container only:
// the app lists and reads export folders and model.json; it never writes there.
resource blobDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::blobService::container.id, appPrincipalId, '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1')
  scope: storage::blobService::container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output blobServiceUri string = 'https://${storage.name}.blob.${environment().suffixes.storage}'
