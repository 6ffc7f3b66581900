// Key Vault holding the Klaviyo private API key. RBAC mode (no access policies), soft delete
// and purge protection on. The app identity may read secrets; the deployer may optionally
// manage them so that the key can be set with `az keyvault secret set` after deployment.

@description('Name of the vault (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Principal id of the app identity (gets Key Vault Secrets User).')
param appPrincipalId string

@description('Name of the secret holding the Klaviyo private API key.')
param klaviyoApiKeySecretName string

@description('Klaviyo private API key. Empty: the secret is not created or changed (set it later with az keyvault secret set).')
@secure()
param klaviyoApiKey string = ''

@description('Object id of a user or group that may manage secrets (Key Vault Secrets Officer). Empty: none.')
param secretsOfficerPrincipalId string = ''

@description('Type of secretsOfficerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param secretsOfficerPrincipalType string = 'User'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Flex Consumption without VNet integration calls the vault from changing outbound IPs; access is Entra ID + RBAC only
  // checkov:skip=CKV_AZURE_189: the public endpoint is needed for the same reason; no access policies exist, only role assignments
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

module klaviyoSecret 'klaviyo-secret.bicep' = if (!empty(klaviyoApiKey)) {
  name: 'klaviyo-secret'
  params: {
    vaultName: vault.name
    name: klaviyoApiKeySecretName
    value: klaviyoApiKey
  }
}

// Key Vault Secrets User (4633458b-17de-408a-b874-0445c86b69e6) on this vault: read secret values,
// nothing else. The vault holds only this app's secrets, and the secret may be created after
// deployment, so the vault (not the secret) is the scope.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets Officer (b86a8fe4-44ce-4948-aee5-eccb2c155cd7) on this vault, for the deployer
// (optional): lets them set or rotate the Klaviyo key. Not granted to the app.
resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secretsOfficerPrincipalId)) {
  name: guid(vault.id, secretsOfficerPrincipalId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: secretsOfficerPrincipalId
    principalType: secretsOfficerPrincipalType
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
