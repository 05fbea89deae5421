"""Network: a small VPC for the Fargate job tasks (two public subnets, egress over HTTPS only)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stagewise.platform import declarations


@dataclass
class NetworkArgs:
    """CIDR of the VPC and the availability zones to spread the subnets over."""

    cidr: str
    availability_zones: tuple[str, ...]


class Network(pulumi.ComponentResource):
    """VPC, one public subnet per AZ (tasks get a public IP to reach AWS APIs without a NAT
    gateway), an internet gateway, and a security group allowing no inbound and HTTPS outbound.
    Outputs ``subnet_ids`` and ``security_group_id``."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("stagewise:platform:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_hostnames=True, enable_dns_support=True, opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, opts=child)
        routes = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id,
                                    routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}], opts=child)
        self.subnets = []
        for decl in declarations.subnets(name, args.cidr, args.availability_zones):
            subnet = aws.ec2.Subnet(decl.logical_name, vpc_id=vpc.id, availability_zone=decl.availability_zone,
                                    cidr_block=decl.cidr, map_public_ip_on_launch=False, opts=child)
            aws.ec2.RouteTableAssociation(decl.logical_name, subnet_id=subnet.id, route_table_id=routes.id, opts=child)
            self.subnets.append(subnet)
        self.security_group = aws.ec2.SecurityGroup(
            declarations.jobs_security_group(name), vpc_id=vpc.id, description=declarations.JOBS_SECURITY_GROUP_DESCRIPTION,
            egress=[dict(rule) for rule in declarations.JOBS_EGRESS],
            opts=child,
        )
        self.vpc_id = vpc.id
        self.subnet_ids = [s.id for s in self.subnets]
        self.security_group_id = self.security_group.id
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids, "security_group_id": self.security_group_id})
