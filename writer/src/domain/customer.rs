//! The customer aggregate: registered once, then contact and address changes.

use outbox_events::{
    Address, CustomerAddressChanged, CustomerContactChanged, CustomerRegistered, Event,
};

use super::Rejection;

/// What the rules need to know about an existing customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerState {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub address: Address,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    Register {
        customer_id: String,
        name: String,
        email: String,
        address: Address,
    },
    ChangeContact {
        customer_id: String,
        name: Option<String>,
        email: Option<String>,
    },
    ChangeAddress {
        customer_id: String,
        address: Address,
    },
}

impl CustomerCommand {
    pub fn verb(&self) -> &'static str {
        match self {
            CustomerCommand::Register { .. } => "register",
            CustomerCommand::ChangeContact { .. } => "change-contact",
            CustomerCommand::ChangeAddress { .. } => "change-address",
        }
    }

    pub fn customer_id(&self) -> &str {
        match self {
            CustomerCommand::Register { customer_id, .. }
            | CustomerCommand::ChangeContact { customer_id, .. }
            | CustomerCommand::ChangeAddress { customer_id, .. } => customer_id,
        }
    }
}

pub fn decide(
    state: Option<&CustomerState>,
    command: &CustomerCommand,
) -> Result<Vec<Event>, Rejection> {
    let event = match (state, command) {
        (
            None,
            CustomerCommand::Register {
                customer_id,
                name,
                email,
                address,
            },
        ) => Event::CustomerRegistered(CustomerRegistered {
            customer_id: customer_id.clone(),
            name: name.clone(),
            email: email.clone(),
            address: address.clone(),
        }),
        (Some(s), CustomerCommand::Register { .. }) => {
            return Err(Rejection::CustomerExists(s.customer_id.clone()))
        }
        (None, other) => return Err(Rejection::UnknownCustomer(other.customer_id().to_owned())),
        (Some(s), CustomerCommand::ChangeContact { name, email, .. }) => {
            let name = name.clone().unwrap_or_else(|| s.name.clone());
            let email = email.clone().unwrap_or_else(|| s.email.clone());
            if name == s.name && email == s.email {
                return Err(Rejection::Unchanged(s.customer_id.clone()));
            }
            Event::CustomerContactChanged(CustomerContactChanged {
                customer_id: s.customer_id.clone(),
                name,
                email,
            })
        }
        (Some(s), CustomerCommand::ChangeAddress { address, .. }) => {
            if *address == s.address {
                return Err(Rejection::Unchanged(s.customer_id.clone()));
            }
            Event::CustomerAddressChanged(CustomerAddressChanged {
                customer_id: s.customer_id.clone(),
                address: address.clone(),
            })
        }
    };
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(city: &str) -> Address {
        Address {
            street: "1 Main St".into(),
            city: city.into(),
            postal_code: "1000".into(),
            country: "DE".into(),
        }
    }

    fn ada() -> CustomerState {
        CustomerState {
            customer_id: "c-ada".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            address: address("Berlin"),
            version: 1,
        }
    }

    #[test]
    fn registering_twice_is_refused() {
        let register = CustomerCommand::Register {
            customer_id: "c-ada".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            address: address("Berlin"),
        };
        assert!(decide(None, &register).is_ok());
        assert_eq!(
            decide(Some(&ada()), &register),
            Err(Rejection::CustomerExists("c-ada".into()))
        );
    }

    #[test]
    fn changes_need_a_customer_and_a_difference() {
        let same = CustomerCommand::ChangeAddress {
            customer_id: "c-ada".into(),
            address: address("Berlin"),
        };
        assert_eq!(
            decide(Some(&ada()), &same),
            Err(Rejection::Unchanged("c-ada".into()))
        );
        assert!(matches!(
            decide(None, &same),
            Err(Rejection::UnknownCustomer(_))
        ));
        let rename = CustomerCommand::ChangeContact {
            customer_id: "c-ada".into(),
            name: Some("Ada King".into()),
            email: None,
        };
        let events = decide(Some(&ada()), &rename).unwrap();
        assert!(
            matches!(&events[..], [Event::CustomerContactChanged(e)] if e.name == "Ada King" && e.email == "ada@example.com")
        );
    }
}
