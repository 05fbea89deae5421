"""Network: a small VPC for the Fargate job tasks (two public subnets, egress over HTTPS only)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


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
        base = args.cidr.split("/")[0].rsplit(".", 2)[0]
        self.subnets = []
        for i, zone in enumerate(args.availability_zones):
            subnet = aws.ec2.Subnet(f"{name}-public-{zone}", vpc_id=vpc.id, availability_zone=zone,
                                    cidr_block=f"{base}.{i * 16}.0/20", map_public_ip_on_launch=False, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=subnet.id, route_table_id=routes.id, opts=child)
            self.subnets.append(subnet)
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-jobs", vpc_id=vpc.id, description="Stagewise job tasks: no inbound, HTTPS outbound",
            egress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"],
                     "description": "AWS APIs and ECR"}],
            opts=child,
        )
        self.vpc_id = vpc.id
        self.subnet_ids = [s.id for s in self.subnets]
        self.security_group_id = self.security_group.id
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids, "security_group_id": self.security_group_id})
