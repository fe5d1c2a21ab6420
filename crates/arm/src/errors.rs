//! The control plane's failures, each with ARM's status and code. They become HTTP in one
//! place only: [`ApiError`], through the `From` impl at the bottom.
//!
//! Messages are the text clients show to people, written the way ARM writes them (whole
//! sentences with quoted values), since tools and people match on them.

use axum::http::StatusCode;
use lanyard_authz::NotAssignable;
use lanyard_domain::IdentityError;
use lanyard_platform::error::from_store;
use lanyard_platform::{ApiError, Dialect};
use lanyard_storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("The api-version query parameter (?api-version=) is required for all requests.")]
    MissingApiVersion,
    #[error("The request content was invalid and could not be deserialized: '{0}'.")]
    InvalidRequestContent(String),
    #[error("The resource type '{resource_type}' could not be found in the namespace '{namespace}' for api version '{api_version}'.")]
    InvalidResourceType {
        namespace: String,
        resource_type: String,
        api_version: String,
    },
    #[error("The requested path '{0}' does not exist.")]
    PathNotFound(String),
    #[error("The HTTP method '{method}' is not supported at '{path}'.")]
    MethodNotAllowed { method: String, path: String },
    #[error("The resource name '{name}' is invalid. {rule}")]
    InvalidResourceName { name: String, rule: &'static str },
    #[error("Resource group name '{0}' is invalid. It must be 1 to 90 characters: letters, digits, '-', '_', '.', '(' and ')', and may not end with '.'.")]
    InvalidResourceGroupName(String),
    #[error("The subscription '{0}' could not be found.")]
    SubscriptionNotFound(String),
    #[error("Resource group '{0}' could not be found.")]
    ResourceGroupNotFound(String),
    #[error("The Resource '{resource}' under resource group '{group}' was not found.")]
    ResourceNotFound { resource: String, group: String },
    #[error(
        "The resource group '{0}' is in deprovisioning state and cannot perform this operation."
    )]
    ResourceGroupBeingDeleted(String),
    #[error("The resource '{0}' is being deleted and cannot perform this operation.")]
    ResourceBeingDeleted(String),
    #[error("The location property is required for this definition.")]
    LocationRequired,
    #[error("Invalid resource group location '{requested}'. The Resource group already exists in location '{existing}'.")]
    InvalidResourceGroupLocation { existing: String, requested: String },
    #[error("The resource '{resource}' already exists in location '{existing}'. A resource with the same name cannot be created in location '{requested}'.")]
    InvalidResourceLocation {
        resource: String,
        existing: String,
        requested: String,
    },
    #[error("The value of '{field}' is invalid: {reason}.")]
    InvalidField { field: &'static str, reason: String },
    #[error("{0}")]
    InvalidIdentity(IdentityError),
    #[error("Identity operation for resource '{resource}' failed: the user-assigned identity '{identity}' was not found.")]
    IdentityNotFound { resource: String, identity: String },
    #[error("Principal {principal} does not exist in the directory {tenant}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay.")]
    PrincipalNotFound { principal: String, tenant: String },
    #[error("The PrincipalId '{principal}' has type '{actual}', which is different from specified PrincipalType '{given}'.")]
    UnmatchedPrincipalType {
        principal: String,
        actual: String,
        given: String,
    },
    #[error("The role assignment already exists.")]
    RoleAssignmentExists,
    #[error("Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")]
    RoleAssignmentUpdateNotPermitted,
    #[error("The role assignment ID '{0}' is not valid. The role assignment ID must be a GUID.")]
    InvalidRoleAssignmentId(String),
    #[error("The specified role definition with ID '{0}' does not exist.")]
    RoleDefinitionDoesNotExist(String),
    #[error("The role definition '{0}' could not be found.")]
    RoleDefinitionNotFound(String),
    #[error("The role assignment '{0}' is not found.")]
    RoleAssignmentNotFound(String),
    #[error("The role definition ID '{0}' is not valid. The role definition ID must be a GUID.")]
    InvalidRoleDefinitionId(String),
    #[error("The request to create role assignment '{assignment}' is not valid: {reason}.")]
    NotAssignable {
        assignment: String,
        reason: NotAssignable,
    },
    #[error("A role definition cannot be updated with a name that already exists: '{0}'.")]
    RoleDefinitionWithSameNameExists(String),
    #[error("Built-in role definition '{0}' cannot be changed or deleted.")]
    BuiltInRoleReadOnly(String),
    #[error("There are existing role assignments referencing role '{0}'. Delete them first.")]
    RoleDefinitionHasAssignments(String),
    #[error("Role '{role}' is assigned at '{scope}', which the new assignableScopes do not cover. Keep an assignable scope that covers every existing assignment of the role, or delete those assignments first.")]
    RoleDefinitionAssignedOutside { role: String, scope: String },
    #[error("The $filter '{0}' is not supported.")]
    UnsupportedFilter(String),
    #[error("The $skiptoken '{0}' is not valid.")]
    InvalidSkipToken(String),
    #[error("The value '{0}' of the query parameter '$top' is not valid: it must be a whole number of at least 1.")]
    InvalidTop(String),
    #[error("The request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    #[error("Another operation changed the same resources at the same time. Retry the request.")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ArmError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SubscriptionNotFound(_)
            | Self::ResourceGroupNotFound(_)
            | Self::ResourceNotFound { .. }
            | Self::RoleDefinitionNotFound(_)
            | Self::RoleAssignmentNotFound(_)
            | Self::PathNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidResourceGroupLocation { .. }
            | Self::InvalidResourceLocation { .. }
            | Self::RoleAssignmentExists
            | Self::ResourceGroupBeingDeleted(_)
            | Self::ResourceBeingDeleted(_)
            | Self::RoleAssignmentUpdateNotPermitted
            | Self::RoleDefinitionWithSameNameExists(_)
            | Self::RoleDefinitionHasAssignments(_)
            | Self::RoleDefinitionAssignedOutside { .. }
            | Self::Conflict => StatusCode::CONFLICT,
            Self::BuiltInRoleReadOnly(_) => StatusCode::FORBIDDEN,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiVersion => "MissingApiVersionParameter",
            Self::InvalidRequestContent(_) => "InvalidRequestContent",
            Self::InvalidResourceType { .. } => "InvalidResourceType",
            Self::PathNotFound(_) => "NotFound",
            Self::MethodNotAllowed { .. } => "MethodNotAllowed",
            Self::InvalidResourceName { .. } => "InvalidResourceName",
            Self::InvalidResourceGroupName(_) => "InvalidResourceGroupName",
            Self::SubscriptionNotFound(_) => "SubscriptionNotFound",
            Self::ResourceGroupNotFound(_) => "ResourceGroupNotFound",
            Self::ResourceNotFound { .. } => "ResourceNotFound",
            Self::LocationRequired => "LocationRequired",
            Self::ResourceGroupBeingDeleted(_) => "ResourceGroupBeingDeleted",
            Self::ResourceBeingDeleted(_) => "AnotherOperationInProgress",
            Self::InvalidResourceGroupLocation { .. } => "InvalidResourceGroupLocation",
            Self::InvalidResourceLocation { .. } => "InvalidResourceLocation",
            Self::InvalidField { .. } => "InvalidRequestContent",
            Self::InvalidIdentity(IdentityError::NotAUserAssignedIdentity(_)) => {
                "LinkedInvalidPropertyId"
            }
            Self::InvalidIdentity(IdentityError::UnknownType(_)) => "InvalidIdentityType",
            Self::InvalidIdentity(_) => "InvalidIdentity",
            Self::IdentityNotFound { .. } => "FailedIdentityOperation",
            Self::PrincipalNotFound { .. } => "PrincipalNotFound",
            Self::UnmatchedPrincipalType { .. } => "UnmatchedPrincipalType",
            Self::RoleAssignmentExists => "RoleAssignmentExists",
            Self::RoleAssignmentUpdateNotPermitted => "RoleAssignmentUpdateNotPermitted",
            Self::InvalidRoleAssignmentId(_) => "InvalidRoleAssignmentId",
            Self::RoleDefinitionDoesNotExist(_) => "RoleDefinitionDoesNotExist",
            Self::InvalidRoleDefinitionId(_) => "InvalidRoleDefinitionId",
            Self::RoleDefinitionNotFound(_) => "RoleDefinitionDoesNotExist",
            Self::RoleAssignmentNotFound(_) => "RoleAssignmentNotFound",
            Self::NotAssignable { .. } => "InvalidCreateRoleAssignmentRequest",
            Self::RoleDefinitionWithSameNameExists(_) => "RoleDefinitionWithSameNameExists",
            Self::BuiltInRoleReadOnly(_) => "BuiltInRoleDefinitionCannotBeModified",
            Self::RoleDefinitionHasAssignments(_) | Self::RoleDefinitionAssignedOutside { .. } => {
                "RoleDefinitionHasAssignments"
            }
            Self::UnsupportedFilter(_) => "InvalidFilterInQueryString",
            Self::InvalidSkipToken(_) => "InvalidSkipToken",
            Self::InvalidTop(_) => "InvalidQueryParameterValue",
            Self::BodyTooLarge(_) => "RequestEntityTooLarge",
            Self::Conflict => "Conflict",
            Self::Store(_) => "InternalServerError",
        }
    }
}

impl From<ArmError> for ApiError {
    fn from(e: ArmError) -> Self {
        match &e {
            ArmError::Store(StoreError::Conflict(_)) => {
                let e = ArmError::Conflict;
                ApiError::arm(e.status(), e.code(), e.to_string())
            }
            ArmError::Store(store) => from_store(Dialect::Arm, store),
            _ => ApiError::arm(e.status(), e.code(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_texts_clients_match_on() {
        let e = ArmError::PrincipalNotFound {
            principal: "p".into(),
            tenant: "t".into(),
        };
        assert!(e.to_string().contains(" does not exist in the directory "));
        assert!(ArmError::RoleAssignmentExists
            .to_string()
            .contains("role assignment already exists"));
        let api: ApiError = ArmError::ResourceGroupNotFound("rg".into()).into();
        assert_eq!(api.status, StatusCode::NOT_FOUND);
        assert_eq!(api.code, "ResourceGroupNotFound");
        let conflict: ApiError = ArmError::Store(StoreError::Conflict("x".into())).into();
        assert_eq!(conflict.status, StatusCode::CONFLICT);
        let internal: ApiError = ArmError::Store(StoreError::Database("secret".into())).into();
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message.contains("secret"));
    }
}
