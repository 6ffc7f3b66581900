// The Klaviyo private API key as a Key Vault secret. A module of its own so that key-vault.bicep
// can deploy it only when a key is given (an empty key leaves the existing secret untouched).

@description('Name of the existing vault.')
param vaultName string

@description('Name of the secret.')
param name string

@description('Klaviyo private API key.')
@secure()
param value string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: Klaviyo private keys do not expire; an expiry date here would stop exports without rotating anything
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}
